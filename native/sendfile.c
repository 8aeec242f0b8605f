// sendfile(2) from a stored blob straight into a client's TCP socket, driven by the Node event loop.
//
// Node has no sendfile for sockets: a blob served through streams is copied from the page cache
// into a JS buffer and back into the kernel, which costs several times the CPU per byte of
// nginx or a Go registry. This addon lets the kernel move the bytes instead.
//
// With `copy` set, the bytes are copied instead: pread into a buffer, send from it. The mirror
// sets it for clients on its own host when the config asks (blobs.copyToLocalClients). Over
// loopback the sender's buffers reach the receiver as they are, so with sendfile it is the
// *client* that copies out of the page cache; on some hosts that costs it 2-3x the kernel time
// per byte (curl, 1 GiB from nginx: 0.34-0.56 s of system time with sendfile, 0.13-0.20 s
// without; skopeo, a 200 MiB layer from the mirror: 545 against 390 ms), on others sendfile is
// the cheaper for both (16 curl clients on one blob: 6.0 GB/s against 4.3 with the copy).
//
// The socket stays Node's: we dup() its descriptor and poll the duplicate for writability on
// Node's event loop (epoll tells a dup apart from the original, so libuv's own watcher on the
// socket is untouched); each time it is writable, a threadpool task sends what fits. The caller
// promises not to write to the socket itself meanwhile. Closing the
// duplicate at the end (or on cancel) is what lets Node close the connection for real.
#include <node_api.h>
#include <uv.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/sendfile.h>
#endif

#define CHECK(call)                                                                    \
  do {                                                                                 \
    if ((call) != napi_ok) {                                                           \
      napi_throw_error(env, NULL, "sendfile addon: " #call " failed");                 \
      return NULL;                                                                     \
    }                                                                                  \
  } while (0)

#ifdef __linux__

// Most bytes one threadpool task sends before the socket is polled again, so that one fast
// client cannot keep a pool thread (shared with fs, crypto, dns) for long: 8 MiB go into a
// loopback socket in ~3 ms. Each slice costs two trips through the event loop, which a download
// running beside keeps busy; at 1 MiB a slice, skopeo's cold pull of one 200 MiB layer took
// 1.35x the direct pull, at 8 MiB 1.19x (bench/RESULTS.md, 2026-12-03 (night)).
#define SLICE (8 * 1024 * 1024)

// The copy mode's buffer, one per pool thread (kept for the thread's life): big enough that a
// syscall pair moves a useful amount, small enough to stay in the core's cache.
#define COPY_CHUNK (256 * 1024)

typedef struct {
  uv_poll_t poll;
  uv_work_t work;
  uv_loop_t* loop;
  int sock;
  int file;
  int64_t offset;
  int64_t remaining;
  int64_t sent;
  int copy;         // pread + send instead of sendfile (a client on this host)
  int slice_result; // set by the pool thread: 0 more to send later, else a negative error code
  int working;      // a slice is in the threadpool: the descriptors must stay open
  int cancelled;    // cancel() came while working
  int result;       // 0 ok, a negative libuv error code otherwise
  int finishing;
  napi_env env;
  napi_ref callback;
  napi_async_context context;
} transfer_t;

static void on_closed(uv_handle_t* handle) {
  transfer_t* t = (transfer_t*)handle->data;
  close(t->sock);
  close(t->file);
  napi_env env = t->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb, recv, argv[2];
  napi_get_reference_value(env, t->callback, &cb);
  napi_get_global(env, &recv);
  napi_create_int32(env, t->result, &argv[0]);
  napi_create_int64(env, t->sent, &argv[1]);
  napi_make_callback(env, t->context, recv, cb, 2, argv, NULL);
  napi_close_handle_scope(env, scope);
  napi_async_destroy(env, t->context);
  napi_delete_reference(env, t->callback);
  free(t);
}

// Main thread, never while a slice is in the pool.
static void finish(transfer_t* t, int result) {
  if (t->finishing) return;
  t->finishing = 1;
  t->result = result;
  // uv_close stops the poll and drops the epoll entry while the duplicate is still open;
  // the descriptors are closed in on_closed, after libuv has let go of them.
  uv_close((uv_handle_t*)&t->poll, on_closed);
}

// Pool thread: up to `want` bytes at the transfer's offset through this thread's buffer. Like
// sendfile: the bytes sent, 0 at the end of the file, or -1 with errno (EAGAIN: socket full).
static ssize_t copy_some(transfer_t* t, size_t want) {
  static __thread char* buffer;
  if (!buffer && !(buffer = malloc(COPY_CHUNK))) {
    errno = ENOMEM;
    return -1;
  }
  if (want > COPY_CHUNK) want = COPY_CHUNK;
  ssize_t got = pread(t->file, buffer, want, (off_t)t->offset);
  if (got <= 0) return got;
  // What the socket does not take now is read again next time (only when it is full).
  return send(t->sock, buffer, (size_t)got, MSG_NOSIGNAL);
}

// Pool thread: a blob not in the page cache makes sendfile wait for the disk, which must not
// stall the event loop (nginx has `aio threads` for the same reason).
static void send_slice(uv_work_t* req) {
  transfer_t* t = (transfer_t*)req->data;
  int64_t budget = SLICE;
  t->slice_result = 0;
  while (t->remaining > 0 && budget > 0) {
    size_t want = (size_t)(t->remaining < budget ? t->remaining : budget);
    off_t off = (off_t)t->offset;
    ssize_t n = t->copy ? copy_some(t, want) : sendfile(t->sock, t->file, &off, want);
    if (n > 0) {
      t->offset += n;
      t->sent += n;
      t->remaining -= n;
      budget -= n;
    } else if (n == 0) {
      t->slice_result = UV_EOF; // the file is shorter than promised
      return;
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN) {
      return; // the socket buffer is full: poll again
    } else {
      t->slice_result = -errno;
      return;
    }
  }
}

static void on_writable(uv_poll_t* poll, int status, int events);

static void after_slice(uv_work_t* req, int status) {
  transfer_t* t = (transfer_t*)req->data;
  t->working = 0;
  if (status == UV_ECANCELED || t->cancelled) {
    finish(t, UV_ECANCELED);
    return;
  }
  if (t->slice_result < 0) {
    finish(t, t->slice_result);
    return;
  }
  if (t->remaining == 0) {
    finish(t, 0);
    return;
  }
  int rc = uv_poll_start(&t->poll, UV_WRITABLE, on_writable);
  if (rc != 0) finish(t, rc);
}

static void on_writable(uv_poll_t* poll, int status, int events) {
  transfer_t* t = (transfer_t*)poll->data;
  (void)events;
  if (status < 0) {
    finish(t, status);
    return;
  }
  uv_poll_stop(poll);
  t->working = 1;
  int rc = uv_queue_work(t->loop, &t->work, send_slice, after_slice);
  if (rc != 0) {
    t->working = 0;
    finish(t, rc);
  }
}

// start(socketFd, fileFd, offset, length, callback(result, sent), copy) -> handle for cancel()
static napi_value start(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 6) {
    napi_throw_type_error(env, NULL, "start(socketFd, fileFd, offset, length, callback, copy)");
    return NULL;
  }
  bool copy;
  CHECK(napi_get_value_bool(env, argv[5], &copy));
  int32_t sock, file;
  int64_t offset, length;
  CHECK(napi_get_value_int32(env, argv[0], &sock));
  CHECK(napi_get_value_int32(env, argv[1], &file));
  CHECK(napi_get_value_int64(env, argv[2], &offset));
  CHECK(napi_get_value_int64(env, argv[3], &length));
  if (sock < 0 || file < 0 || offset < 0 || length < 0) {
    napi_throw_range_error(env, NULL, "sendfile: negative descriptor, offset or length");
    return NULL;
  }
  uv_loop_t* loop;
  CHECK(napi_get_uv_event_loop(env, &loop));

  transfer_t* t = calloc(1, sizeof(transfer_t));
  if (!t) {
    napi_throw_error(env, NULL, "sendfile: out of memory");
    return NULL;
  }
  t->sock = dup(sock);
  t->file = dup(file);
  if (t->sock < 0 || t->file < 0) {
    int err = errno;
    if (t->sock >= 0) close(t->sock);
    if (t->file >= 0) close(t->file);
    free(t);
    napi_throw_error(env, uv_err_name(-err), "sendfile: dup failed");
    return NULL;
  }
  t->loop = loop;
  t->work.data = t;
  t->offset = offset;
  t->remaining = length;
  t->copy = copy;
  t->env = env;
  napi_value name;
  CHECK(napi_create_string_utf8(env, "sparse-mirror:sendfile", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_async_init(env, NULL, name, &t->context));
  CHECK(napi_create_reference(env, argv[4], 1, &t->callback));
  int rc = uv_poll_init(loop, &t->poll, t->sock);
  if (rc != 0) { // nothing registered with libuv yet: undo by hand and throw
    close(t->sock);
    close(t->file);
    napi_async_destroy(env, t->context);
    napi_delete_reference(env, t->callback);
    free(t);
    napi_throw_error(env, uv_err_name(rc), "sendfile: cannot poll the socket");
    return NULL;
  }
  t->poll.data = t;
  rc = uv_poll_start(&t->poll, UV_WRITABLE, on_writable);
  if (rc != 0) finish(t, rc); // reported through the callback, after libuv closes the handle
  napi_value handle;
  CHECK(napi_create_external(env, t, NULL, NULL, &handle));
  return handle;
}

// cancel(handle): stops a transfer; its callback still runs, with UV_ECANCELED.
// The caller must not cancel after the callback has run (the handle is freed then).
static napi_value cancel(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void* data;
  CHECK(napi_get_value_external(env, argv[0], &data));
  transfer_t* t = (transfer_t*)data;
  if (t->working) {
    t->cancelled = 1; // after_slice finishes it
    uv_cancel((uv_req_t*)&t->work);
  } else {
    finish(t, UV_ECANCELED);
  }
  return NULL;
}

#define SUPPORTED true
#else
#define SUPPORTED false
#endif

static napi_value init(napi_env env, napi_value exports) {
  napi_value supported;
  CHECK(napi_get_boolean(env, SUPPORTED, &supported));
  CHECK(napi_set_named_property(env, exports, "supported", supported));
#ifdef __linux__
  napi_value fn;
  CHECK(napi_create_function(env, "start", NAPI_AUTO_LENGTH, start, NULL, &fn));
  CHECK(napi_set_named_property(env, exports, "start", fn));
  CHECK(napi_create_function(env, "cancel", NAPI_AUTO_LENGTH, cancel, NULL, &fn));
  CHECK(napi_set_named_property(env, exports, "cancel", fn));
#endif
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
