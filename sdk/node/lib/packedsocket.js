// The packed socket: PackedStream's messages over a plain unix socket beside the gRPC one
// (PATH.packed), no HTTP/2. The framing, the HELLO and the status codes are specified in
// proto/simgym/v1/simulator.proto (PackedSocketKind); simserver/packedsocket.py is the Python
// twin. Each REQUEST runs on the same packed engine (packed.js) as PackedStream.
//
// Bounds, as simserver's: connections are capped (maxConnections), a new connection has
// HELLO_TIMEOUT s to say HELLO, a connection may idle between frames until the session lease,
// a frame it has begun must arrive whole within FRAME_TIMEOUT s, and frames are capped by the
// server's message size (announced length checked before the body is read).

import { chmodSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { status } from '@grpc/grpc-js';
import { run as runPacked } from './packed.js';
import { WRONG_TOKEN, checkProtocol, sameSecret } from './handshake.js';
import { contract } from './proto.js';

export const PACKED_SUFFIX = '.packed';
export const HELLO_TIMEOUT = 10;
export const FRAME_TIMEOUT = 10;

class FrameError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/** One frame: 4-byte little-endian length, kind byte, payload. */
export function frame(kind, payload) {
  const out = Buffer.allocUnsafe(5 + payload.length);
  out.writeUInt32LE(payload.length + 1, 0);
  out[4] = kind;
  out.set(payload, 5);
  return out;
}

export class PackedSocketServer {
  /**
   * @param {import('./sessions.js').SessionManager} sessions
   * @param {string} file the socket path (the gRPC socket's path + ".packed")
   * @param {{token: string|null, maxMessageBytes: number, maxConnections: number,
   *   mode?: number, idleTimeout?: number, logger?: import('./log.js').Logger,
   *   onFailure?: Function}} o
   */
  constructor(sessions, file, o) {
    this.sessions = sessions;
    this.path = file;
    this.o = { idleTimeout: 300, ...o };
    const c = contract();
    this.types = c.types;
    this.kinds = {
      HELLO: c.kinds.PACKED_SOCKET_KIND_HELLO,
      REQUEST: c.kinds.PACKED_SOCKET_KIND_REQUEST,
      REPLY: c.kinds.PACKED_SOCKET_KIND_REPLY,
      STATUS: c.kinds.PACKED_SOCKET_KIND_STATUS,
    };
    this.conns = new Set();
    this.server = null;
  }

  /** Bind and listen (the caller has checked the path is free or stale). */
  start() {
    return new Promise((resolve, reject) => {
      const server = net.createServer((sock) => this._accept(sock));
      server.once('error', reject);
      server.listen(this.path, 64, () => {
        server.off('error', reject);
        try {
          if (this.o.mode != null) chmodSync(this.path, this.o.mode);
        } catch (exc) {
          server.close();
          reject(exc);
          return;
        }
        this.server = server;
        const period = Math.max(0.05, Math.min(1, this.o.idleTimeout / 4));
        this._sweep = setInterval(() => this.sweep(), period * 1000);
        this._sweep.unref();
        resolve();
      });
    });
  }

  /** Stop accepting, end every connection, remove the socket file. */
  async stop() {
    clearInterval(this._sweep);
    for (const conn of this.conns) conn.sock.destroy();
    this.conns.clear();
    if (this.server) await new Promise((resolve) => this.server.close(() => resolve()));
    try {
      unlinkSync(this.path);
    } catch {
      // already gone
    }
  }

  _status(code, message) {
    const T = this.types.PackedSocketStatus;
    return frame(this.kinds.STATUS, T.encode({ code, message }).finish());
  }

  _accept(sock) {
    if (this.conns.size >= this.o.maxConnections) {
      this.o.logger?.throttled('warning', 'packed refused', `packed socket: connection refused, ${this.o.maxConnections} already open`);
      sock.end(
        this._status(
          status.RESOURCE_EXHAUSTED,
          `the server's packed socket serves at most ${this.o.maxConnections} connections at once`
        )
      );
      return;
    }
    const now = performance.now();
    const conn = {
      sock,
      chunks: [],
      size: 0,
      hello: false,
      busy: false,
      queue: [],
      closed: false,
      since: now, // when the connection began to wait for its next frame
      partialSince: 0, // when the frame being read began to arrive (0: none)
    };
    this.conns.add(conn);
    sock.on('data', (chunk) => this._data(conn, chunk));
    sock.on('close', () => {
      conn.closed = true;
      this.conns.delete(conn);
    });
    sock.on('error', () => {});
  }

  /** End connections past their HELLO, idle or frame timeouts. */
  sweep(at = performance.now()) {
    for (const conn of this.conns) {
      if (conn.busy) continue;
      const waited = (at - conn.since) / 1000;
      if (conn.partialSince && (at - conn.partialSince) / 1000 > FRAME_TIMEOUT) {
        this._end(conn, new FrameError(status.DEADLINE_EXCEEDED, `a frame began but did not arrive whole within ${FRAME_TIMEOUT} s`));
      } else if (!conn.hello && waited > HELLO_TIMEOUT) {
        this._end(conn, new FrameError(status.DEADLINE_EXCEEDED, `no HELLO within ${HELLO_TIMEOUT} s`));
      } else if (conn.hello && waited > this.o.idleTimeout) {
        this._end(
          conn,
          new FrameError(status.CANCELLED, `no request for ${this.o.idleTimeout} s (the session lease): connection closed`)
        );
      }
    }
  }

  _end(conn, exc) {
    if (conn.closed) return;
    conn.closed = true;
    this.conns.delete(conn);
    this.o.logger?.throttled('info', `packed closed ${exc.code}`, `packed socket: ${exc.message}; connection closed`);
    conn.sock.end(this._status(exc.code ?? status.INTERNAL, exc.message));
  }

  _data(conn, chunk) {
    if (conn.closed) return;
    conn.chunks.push(chunk);
    conn.size += chunk.length;
    try {
      for (;;) {
        if (conn.size < 4) break;
        let buf = conn.chunks.length === 1 ? conn.chunks[0] : Buffer.concat(conn.chunks, conn.size);
        conn.chunks = [buf];
        const length = buf.readUInt32LE(0);
        if (length > this.o.maxMessageBytes) {
          throw new FrameError(status.RESOURCE_EXHAUSTED, `frame of ${length} bytes exceeds the limit of ${this.o.maxMessageBytes}`);
        }
        if (length === 0) throw new FrameError(status.INVALID_ARGUMENT, 'empty frame (no kind byte)');
        if (conn.size < 4 + length) break;
        const kind = buf[4];
        const payload = buf.subarray(5, 4 + length);
        buf = buf.subarray(4 + length);
        conn.chunks = buf.length ? [buf] : [];
        conn.size = buf.length;
        conn.queue.push([kind, payload]);
      }
    } catch (exc) {
      this._end(conn, exc);
      return;
    }
    conn.partialSince = conn.size ? conn.partialSince || performance.now() : 0;
    this._pump(conn);
  }

  _pump(conn) {
    // Lock-step: one frame at a time; a sim that returns a Promise holds the next frame.
    while (!conn.busy && !conn.closed && conn.queue.length) {
      const [kind, payload] = conn.queue.shift();
      let out;
      try {
        out = this._frame(conn, kind, payload);
      } catch (exc) {
        this._end(conn, exc);
        return;
      }
      if (out && typeof out.then === 'function') {
        conn.busy = true;
        out.then(
          (reply) => {
            conn.busy = false;
            this._reply(conn, reply);
            this._pump(conn);
          },
          (exc) => {
            conn.busy = false;
            this._end(conn, exc);
          }
        );
        return;
      }
      if (out) this._reply(conn, out);
    }
  }

  _frame(conn, kind, payload) {
    const k = this.kinds;
    if (!conn.hello) {
      if (kind !== k.HELLO) throw new FrameError(status.INVALID_ARGUMENT, `the first frame must be HELLO, not kind ${kind}`);
      const hello = this._parse(this.types.PackedSocketHello, payload, 'HELLO');
      if (this.o.token != null && !sameSecret(hello.token, this.o.token)) {
        throw new FrameError(status.UNAUTHENTICATED, WRONG_TOKEN);
      }
      checkProtocol(hello.protocol);
      conn.hello = true;
      conn.since = performance.now();
      conn.sock.write(this._status(0, ''));
      return null;
    }
    if (kind !== k.REQUEST) throw new FrameError(status.INVALID_ARGUMENT, `expected a REQUEST frame, got kind ${kind}`);
    const request = this._parse(this.types.PackedRequest, payload, 'REQUEST');
    return runPacked(this.sessions, request, this.o.onFailure);
  }

  _reply(conn, reply) {
    if (conn.closed) return;
    const body = this.types.PackedReply.encode(reply).finish();
    if (body.length + 1 > this.o.maxMessageBytes) {
      this._end(conn, new FrameError(status.RESOURCE_EXHAUSTED, `reply of ${body.length + 1} bytes exceeds the limit of ${this.o.maxMessageBytes}`));
      return;
    }
    conn.since = performance.now();
    conn.sock.write(frame(this.kinds.REPLY, body));
  }

  _parse(type, payload, what) {
    try {
      return type.decode(payload);
    } catch (exc) {
      throw new FrameError(status.INVALID_ARGUMENT, `${what} frame is not a valid message: ${exc.message}`);
    }
  }
}
