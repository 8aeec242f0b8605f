// A network namespace made for one test, joined to this one by a veth pair: 10.213.N.1 here,
// 10.213.N.2 there. Processes started in it with `inNetns` see its own loopback and resolve
// names through /etc/netns/NAME/hosts (ip-netns bind-mounts it over /etc/hosts for them).
import { rmSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { exec, onProcessExit } from './exec.js';

export interface Netns {
  name: string;
  /** The namespace's address on the veth link. */
  address: string;
  /** The command line that runs `argv` inside the namespace. */
  inNetns(argv: string[]): [string, string[]];
  remove(): Promise<void>;
}

async function ip(args: string[]): Promise<void> {
  const r = await exec('ip', args, { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`ip ${args.join(' ')} failed: ${r.stderr.trim()}`);
}

export async function makeNetns(hosts: Record<string, string> = {}): Promise<Netns> {
  const id = randomBytes(3).toString('hex');
  const name = `smtest-${id}`;
  const n = 1 + (parseInt(id, 16) % 250);
  const here = `smh${id}`;
  const there = `smn${id}`;
  const etc = `/etc/netns/${name}`;
  const remove = async () => {
    await exec('ip', ['link', 'del', here], { timeoutMs: 10_000 });
    await exec('ip', ['netns', 'del', name], { timeoutMs: 10_000 });
    await rm(etc, { recursive: true, force: true });
  };
  onProcessExit(() => {
    rmSync(etc, { recursive: true, force: true });
  });
  await ip(['netns', 'add', name]);
  try {
    await ip(['link', 'add', here, 'type', 'veth', 'peer', 'name', there]);
    await ip(['link', 'set', there, 'netns', name]);
    await ip(['addr', 'add', `10.213.${n}.1/30`, 'dev', here]);
    await ip(['link', 'set', here, 'up']);
    await ip(['-n', name, 'addr', 'add', `10.213.${n}.2/30`, 'dev', there]);
    await ip(['-n', name, 'link', 'set', there, 'up']);
    await ip(['-n', name, 'link', 'set', 'lo', 'up']);
    await mkdir(etc, { recursive: true });
    const lines = ['127.0.0.1 localhost', ...Object.entries(hosts).map(([h, a]) => `${a} ${h}`), ''];
    await writeFile(`${etc}/hosts`, lines.join('\n'));
  } catch (e) {
    await remove();
    throw e;
  }
  return { name, address: `10.213.${n}.2`, inNetns: (argv) => ['ip', ['netns', 'exec', name, ...argv]], remove };
}
