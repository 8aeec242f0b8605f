// The Sigstore libraries take ~15 MiB of memory once loaded. Every mirror imports the signature
// modules (the gate sits in front of pulls, prefetch and import), few ever meet a Sigstore bundle
// or a keyless policy: the libraries are loaded on first use instead.
import { createRequire } from 'node:module';

interface SigstoreLibs {
  bundle: typeof import('@sigstore/bundle');
  verify: typeof import('@sigstore/verify');
  specs: typeof import('@sigstore/protobuf-specs');
}

let loaded: SigstoreLibs | undefined;

export function sigstore(): SigstoreLibs {
  if (!loaded) {
    const require = createRequire(import.meta.url);
    loaded = { bundle: require('@sigstore/bundle'), verify: require('@sigstore/verify'), specs: require('@sigstore/protobuf-specs') };
  }
  return loaded;
}
