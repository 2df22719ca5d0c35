// The server around a SessionManager: gRPC (simgym.v1.Simulator) on TCP and/or a unix
// socket, the packed socket beside a unix one, token auth, health, reflection, bounds.
//
// simserver/server.py, servicer.py and streams.py are its Python twins: the same options (by
// the same flag names in cli.js), the same status codes and messages.

import { existsSync, lstatSync, statSync, unlinkSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation, protoPath as healthProto } from 'grpc-health-check';
import * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import descriptor from 'protobufjs/ext/descriptor/index.js';
import { ConfigError, SimServerError, clip } from './errors.js';
import { WRONG_TOKEN, checkProtocol, sameSecret } from './handshake.js';
import { Logger } from './log.js';
import { run as runPacked } from './packed.js';
import { PackedSocketServer, PACKED_SUFFIX } from './packedsocket.js';
import { PROTOCOL, PROTO_FILE, SERVICE_NAME, contract, has, structToObject, toNumber } from './proto.js';
import { SessionManager } from './sessions.js';
import { describeSim } from './sim.js';

export const VERSION = '0.1.0';
export const SERVER_NAME = `simgym-node ${VERSION}`;
export const DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
// A client opens a stream to send on it: gymclient sends its first request at once.
export const FIRST_MESSAGE_TIMEOUT = 10;
// Longest unix socket path (sockaddr_un.sun_path is 108 bytes with its NUL).
const UNIX_PATH_MAX = 107;
const HEALTH_PREFIX = '/grpc.health.v1.Health/';

/**
 * @typedef {object} ServerOptions
 * @property {string} [host] interface for TCP (default 127.0.0.1)
 * @property {number|null} [port] TCP port, 0: any free one; null: no TCP (default: 0 unless unix)
 * @property {string|null} [unix] unix socket path
 * @property {string|null} [token] require "authorization: Bearer TOKEN"
 * @property {boolean} [insecure] allow a non-loopback host without a token
 * @property {string|null} [tlsCert] PEM certificate chain file
 * @property {string|null} [tlsKey] PEM private key file
 * @property {number} [maxSessions] sessions open at once (64)
 * @property {number} [leaseSeconds] idle lease (300)
 * @property {number} [hungGrace] seconds past a client's deadline before a call is hung (30)
 * @property {number|null} [maxStreams] PackedStreams served at once (default: maxSessions)
 * @property {number|null} [maxSlots] slots per packed request (default max(1024, 4 x sessions))
 * @property {number} [maxMessageBytes] largest message (16 MiB)
 * @property {boolean} [packedSocket] serve PATH.packed beside a unix socket (true)
 * @property {boolean} [reflection] serve gRPC server reflection (true)
 * @property {Logger} [logger]
 */

/** Refuse option values that would switch a protection off; throws ConfigError. */
export function validateOptions(o) {
  if (o.port == null && o.unix == null) throw new ConfigError('nothing to listen on: give --port and/or --unix');
  if (o.port != null && !(Number.isInteger(o.port) && o.port >= 0 && o.port <= 65535)) {
    throw new ConfigError(`--port ${o.port}: a TCP port is 0 (any free one) to 65535`);
  }
  if (o.token != null) checkTokenText(o.token, '--token');
  if (o.port != null && !isLoopback(o.host) && !o.token && !o.insecure) {
    throw new ConfigError(
      `--host ${o.host} exposes the sim beyond this machine: give --token ` +
        '(and preferably --tls-cert/--tls-key), or --insecure to accept the risk'
    );
  }
  if (Boolean(o.tlsCert) !== Boolean(o.tlsKey)) throw new ConfigError('--tls-cert and --tls-key go together');
  checkRange('--max-sessions', o.maxSessions, 1, 10_000, true);
  checkRange('--lease', o.leaseSeconds, 0.1, 7 * 86_400);
  checkRange('--hung-grace', o.hungGrace, 0, 86_400);
  checkRange('--max-message-mb', o.maxMessageBytes / 2 ** 20, 1, 1024);
  if (o.maxStreams != null) checkRange('--max-streams', o.maxStreams, 1, 100_000, true);
  if (o.maxSlots != null) checkRange('--max-slots', o.maxSlots, 1, 10_000_000, true);
}

/** Refuse `value` unless a finite number (whole if `whole`) in [low, high]. */
export function checkRange(flag, value, low, high, whole = false) {
  const ok =
    typeof value === 'number' && Number.isFinite(value) && value >= low && value <= high && (!whole || Number.isInteger(value));
  if (!ok) throw new ConfigError(`${flag} ${value}: give ${whole ? 'a whole number' : 'a number'} from ${low} to ${high}`);
}

/** Refuse a token that protects nothing or that no gRPC client can send. */
export function checkTokenText(token, flag) {
  if (!token.trim()) throw new ConfigError(`${flag}: the token is empty or only whitespace; give a real secret`);
  if (token !== token.trim() || !/^[ -~]+$/.test(token)) {
    throw new ConfigError(`${flag}: use printable ASCII without spaces at either end (it travels in gRPC metadata)`);
  }
}

export function isLoopback(host) {
  if (host === 'localhost' || host === 'ip6-localhost') return true;
  const bare = host.replace(/^\[|\]$/g, '');
  if (net.isIPv4(bare)) return bare.startsWith('127.');
  if (net.isIPv6(bare)) return bare === '::1' || bare === '0:0:0:0:0:0:0:1';
  return false;
}

/**
 * Fill in the `dependency` lists of a proto-loader definition's file descriptors, in place.
 *
 * proto-loader leaves them empty (grpc-node issue 2595), so a reflection client (grpcurl,
 * Python's descriptor pool) given simulator.proto's descriptor cannot resolve
 * google.protobuf.Struct. Each file gets the files that define the types it references.
 */
export function linkDependencies(definition) {
  const FDP = descriptor.FileDescriptorProto;
  const files = new Map();
  for (const def of Object.values(definition)) {
    for (const bin of def.fileDescriptorProtos ?? []) {
      const file = FDP.decode(bin);
      files.set(file.name, file);
    }
  }
  const owner = new Map(); // fully qualified type name -> file name
  const index = (prefix, messages, enums, file) => {
    for (const e of enums ?? []) owner.set(prefix ? `${prefix}.${e.name}` : e.name, file);
    for (const m of messages ?? []) {
      const name = prefix ? `${prefix}.${m.name}` : m.name;
      owner.set(name, file);
      index(name, m.nestedType, m.enumType, file);
    }
  };
  for (const file of files.values()) index(file.package ?? '', file.messageType, file.enumType, file.name);
  for (const file of files.values()) {
    const deps = new Set(file.dependency ?? []);
    const refs = [];
    const walk = (messages) => {
      for (const m of messages ?? []) {
        for (const f of m.field ?? []) if (f.typeName) refs.push(f.typeName);
        walk(m.nestedType);
      }
    };
    walk(file.messageType);
    for (const svc of file.service ?? []) for (const m of svc.method ?? []) refs.push(m.inputType, m.outputType);
    for (const ref of refs) {
      // Absolute (".pkg.Type") or, as proto-loader writes them, relative to the root or the file's package.
      const bare = ref.replace(/^\./, '');
      const other = owner.get(bare) ?? owner.get(`${file.package}.${bare}`);
      if (other && other !== file.name) deps.add(other);
    }
    file.dependency = [...deps];
  }
  const encoded = new Map([...files].map(([name, file]) => [name, Buffer.from(FDP.encode(file).finish())]));
  for (const def of Object.values(definition)) {
    if (def.fileDescriptorProtos) def.fileDescriptorProtos = def.fileDescriptorProtos.map((bin) => encoded.get(FDP.decode(bin).name));
  }
}

/** Write the bound address atomically, so a poller never reads half a line. */
export function writeAddressFile(file, address) {
  const target = path.resolve(file);
  const tmp = path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}.tmp`);
  writeFileSync(tmp, `${address}\n`);
  renameSync(tmp, target);
}

function connectable(host) {
  const bare = host.replace(/^\[|\]$/g, '');
  if (bare === '0.0.0.0') return '127.0.0.1';
  if (bare === '::') return '[::1]';
  return net.isIPv6(bare) ? `[${bare}]` : host;
}

function socketAlive(file) {
  return new Promise((resolve) => {
    const s = net.connect(file);
    const done = (alive) => {
      s.destroy();
      resolve(alive);
    };
    s.setTimeout(500, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** The seconds a call's client waits from now, or null when it set no deadline. */
function remaining(call) {
  const deadline = call.getDeadline();
  const at = deadline instanceof Date ? deadline.getTime() : Number(deadline);
  if (!Number.isFinite(at)) return null;
  return Math.max(0, (at - Date.now()) / 1000);
}

const fail = (exc) => ({ code: exc.code, details: exc.message });

/** A running simulator server: `await start()`, then `stop()`. */
export class SimServer {
  /**
   * @param {Function|object} sim a sim class or descriptor (see sim.js)
   * @param {ServerOptions} [options]
   */
  constructor(sim, options = {}) {
    const o = {
      host: '127.0.0.1',
      port: options.unix != null && options.port === undefined ? null : 0,
      unix: null,
      token: null,
      insecure: false,
      tlsCert: null,
      tlsKey: null,
      maxSessions: 64,
      leaseSeconds: 300,
      hungGrace: 30,
      maxStreams: null,
      maxSlots: null,
      maxMessageBytes: DEFAULT_MAX_MESSAGE_BYTES,
      packedSocket: true,
      reflection: true,
      ...options,
    };
    if (options.port === undefined && o.unix == null) o.port = 0;
    validateOptions(o);
    this.options = o;
    this.log = o.logger ?? new Logger('INFO');
    this.desc = describeSim(sim);
    this.contract = contract();
    this.sessions = new SessionManager(this.desc, {
      maxSessions: o.maxSessions,
      leaseSeconds: o.leaseSeconds,
      hungGrace: o.hungGrace,
      maxSlots: o.maxSlots ?? Math.max(1024, 4 * o.maxSessions),
      log: (level, msg) => this.log.log(level, msg),
    });
    this.maxStreams = o.maxStreams ?? o.maxSessions;
    this.streams = new Set();
    this.addresses = [];
    this.packed = null;
    this.stopped = false;
    this.health = new HealthImplementation({ '': 'NOT_SERVING', [SERVICE_NAME]: 'NOT_SERVING' });
    const interceptors = o.token ? [this._tokenInterceptor(o.token)] : [];
    this.server = new grpc.Server({
      'grpc.max_receive_message_length': o.maxMessageBytes,
      'grpc.max_send_message_length': o.maxMessageBytes,
      // Let clients keep idle connections alive with pings (detects vanished peers).
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
      'grpc.http2.min_ping_interval_without_data_ms': 5_000,
      'grpc.keepalive_permit_without_calls': 1,
      interceptors,
    });
    this.server.addService(this.contract.service, this._handlers());
    this.health.addToServer(this.server);
    if (o.reflection) this._addReflection();
    this._variables = (list) =>
      list.map((v) => ({
        name: v.name,
        ...(v.low != null ? { low: v.low } : {}),
        ...(v.high != null ? { high: v.high } : {}),
        description: v.description ?? '',
        values: v.values ?? [],
      }));
    this._states = this._variables(this.desc.states);
    this._config = this._variables(this.desc.config);
    this._declared = new Map(this.desc.actions.map((v) => [v.name, v]));
  }

  _tokenInterceptor(token) {
    const expected = `Bearer ${token}`;
    return (methodDescriptor, call) =>
      new grpc.ServerInterceptingCall(call, {
        start: (next) => {
          next({
            onReceiveMetadata: (metadata, mdNext) => {
              // Health checks stay open so that orchestrators can probe readiness.
              if (methodDescriptor.path.startsWith(HEALTH_PREFIX)) return mdNext(metadata);
              const given = metadata.get('authorization');
              if (given.length && sameSecret(given[0], expected)) return mdNext(metadata);
              call.sendStatus({
                code: grpc.status.UNAUTHENTICATED,
                details: `${WRONG_TOKEN} (send 'authorization: Bearer <token>')`,
              });
            },
          });
        },
      });
  }

  _addReflection() {
    // Server reflection (grpcurl without the .proto), from the same proto file.
    const definition = protoLoader.loadSync([path.join(this.contract.dir, PROTO_FILE), healthProto], {
      includeDirs: [this.contract.dir],
      keepCase: true,
    });
    linkDependencies(definition);
    new ReflectionService(definition).addToServer(this.server);
  }

  _handlers() {
    const s = this.sessions;
    const unary = (name, body) => (call, callback) => {
      let result;
      try {
        result = body(call.request, call);
      } catch (exc) {
        return callback(this._failure(name, call.request, exc));
      }
      if (result && typeof result.then === 'function') {
        result.then(
          (value) => callback(null, value),
          (exc) => callback(this._failure(name, call.request, exc))
        );
      } else {
        callback(null, result);
      }
    };
    const transition = (result) => {
      const out = result.outcome;
      const t = {
        states: out.states,
        terminated: out.terminated,
        truncated: out.truncated,
        nonfinite: out.nonfinite,
        step: result.step,
        sim_seconds: out.simSeconds,
      };
      if (out.reward !== undefined) t.reward = out.reward;
      return { transition: t };
    };
    const then = (value, map) => (value && typeof value.then === 'function' ? value.then(map) : map(value));
    return {
      Open: unary('open', (req, call) => this._open(req, call)),
      Reset: unary('reset', (req, call) => {
        const seed = has(req, 'seed') ? toNumber(req.seed) : undefined;
        return then(
          s.reset(req.session_id, structToObject(req.config), seed, toNumber(req.seq), remaining(call)),
          transition
        );
      }),
      Step: unary('step', (req, call) => then(s.step(req.session_id, req.action, toNumber(req.seq), remaining(call)), transition)),
      States: unary('states', (req) => ({ states: s.states(req.session_id) })),
      Termination: unary('termination', (req) => {
        const [terminated, truncated] = s.termination(req.session_id);
        return { terminated, truncated };
      }),
      Close: unary('close', (req) => {
        s.close(req.session_id);
        return {};
      }),
      PackedStream: (call) => this._packedStream(call),
    };
  }

  _failure(name, request, exc) {
    if (!(exc instanceof SimServerError)) {
      this.log.log('error', `${name}: ${exc?.stack ?? exc}`);
      return { code: grpc.status.INTERNAL, details: `server error in ${name}: ${exc}` };
    }
    this._logFailure(name, request?.session_id ?? '', exc);
    return fail(exc);
  }

  _logFailure(call, sessionId, exc) {
    const level = exc.code === grpc.status.INTERNAL ? 'warning' : 'info';
    const kind = `${call}|${exc.code}|${exc.exc?.name ?? ''}`;
    this.log.throttled(level, kind, `${call} on session ${String(sessionId).slice(0, 8)}: ${exc.message}`);
  }

  _open(req, call) {
    checkProtocol(req.protocol);
    const session = this.sessions.open(req.action_names, req.lease_seconds, clip(req.client || call.getPeer(), 80));
    return {
      session_id: session.id,
      protocol: PROTOCOL,
      server: SERVER_NAME,
      sim_name: this.desc.simName,
      states: this._states,
      actions: this._variables(session.actionNames.map((n) => this._declared.get(n) ?? { name: n })),
      config: this._config,
      lease_seconds: session.lease,
      seedable: this.desc.seedable,
      max_message_bytes: this.options.maxMessageBytes,
      packed_socket: this.packed !== null,
    };
  }

  _packedStream(call) {
    if (this.streams.size >= this.maxStreams) {
      this.log.throttled('warning', 'stream refused', `stream refused: ${this.maxStreams} streams already open`);
      call.emit('error', {
        code: grpc.status.RESOURCE_EXHAUSTED,
        details: `the server serves at most ${this.maxStreams} streams at once (--max-streams); close idle ones or retry later`,
      });
      return;
    }
    // Lock-step: each request is answered before the next is run, in order (a sim that
    // returns a Promise makes the chain wait for it).
    const watch = { call, waitingSince: performance.now(), received: false, ended: false };
    this.streams.add(watch);
    let chain = Promise.resolve();
    let ended = false;
    const end = (error) => {
      if (ended) return;
      ended = true;
      this.streams.delete(watch);
      if (error) call.emit('error', error);
      else call.end();
    };
    call.on('data', (request) => {
      watch.received = true;
      watch.waitingSince = null;
      chain = chain.then(() => {
        if (ended) return undefined;
        let reply;
        try {
          reply = runPacked(this.sessions, request, (c, id, exc) => this._logFailure(c, id, exc));
        } catch (exc) {
          return end(this._failure('packed', null, exc));
        }
        const send = (value) => {
          if (ended) return;
          call.write(value);
          watch.waitingSince = performance.now();
        };
        if (reply && typeof reply.then === 'function') {
          return reply.then(send, (exc) => end(this._failure('packed', null, exc)));
        }
        return send(reply);
      });
    });
    call.on('end', () => {
      chain = chain.then(() => end(null));
    });
    call.on('cancelled', () => {
      ended = true;
      this.streams.delete(watch);
    });
    call.on('error', () => {
      ended = true;
      this.streams.delete(watch);
    });
  }

  /** End PackedStreams that waited too long for a message (their sessions expire anyway). */
  endIdleStreams(at = performance.now()) {
    let count = 0;
    for (const watch of [...this.streams]) {
      if (watch.waitingSince === null || watch.ended) continue;
      const [limit, what] = watch.received
        ? [this.options.leaseSeconds, 'no message']
        : [FIRST_MESSAGE_TIMEOUT, 'no first message'];
      if ((at - watch.waitingSince) / 1000 <= limit) continue;
      watch.ended = true;
      count += 1;
      this.streams.delete(watch);
      const message =
        `stream ended by the server: ${what} for ${limit} s (streams idle longer than the ` +
        'session lease, or silent after opening, free their slot)';
      this.log.throttled('info', `stream idle: ${what}`, message);
      watch.call.emit('error', { code: grpc.status.CANCELLED, details: message });
    }
    return count;
  }

  _credentials() {
    const o = this.options;
    if (!o.tlsCert) return grpc.ServerCredentials.createInsecure();
    let key, cert;
    try {
      [key, cert] = [readFileSync(o.tlsKey), readFileSync(o.tlsCert)];
    } catch (exc) {
      throw new ConfigError(`cannot read the TLS files: ${exc.message}`);
    }
    return grpc.ServerCredentials.createSsl(null, [{ private_key: key, cert_chain: cert }], false);
  }

  _bind(target, creds) {
    return new Promise((resolve, reject) => {
      this.server.bindAsync(target, creds, (err, port) => {
        if (err) reject(new ConfigError(`cannot listen on ${target}: ${err.message}`));
        else resolve(port);
      });
    });
  }

  /**
   * Bind, start serving and return the bound addresses ("host:port", "unix:/path").
   * @returns {Promise<string[]>}
   * @throws {ConfigError} an address is in use or cannot be bound
   */
  async start() {
    const o = this.options;
    const creds = this._credentials();
    let unixPath = null;
    if (o.unix != null) {
      const file = path.resolve(o.unix);
      if (!existsSync(path.dirname(file))) {
        throw new ConfigError(`--unix ${o.unix}: the folder ${path.dirname(file)} does not exist`);
      }
      if (Buffer.byteLength(file) > UNIX_PATH_MAX) {
        throw new ConfigError(
          `--unix ${clip(file)}: ${Buffer.byteLength(file)} bytes; a unix socket path has at most ` +
            `${UNIX_PATH_MAX} (the kernel's limit): use a shorter one`
        );
      }
      if (existsSync(file)) {
        if (!lstatSync(file).isSocket()) throw new ConfigError(`${file} exists and is not a socket`);
        // A stale socket from a dead server is taken over; a live one is not.
        if (await socketAlive(file)) throw new ConfigError(`unix socket ${file} is in use by a running server`);
        unlinkSync(file);
      }
      await this._bind(`unix:${file}`, creds);
      this.addresses.push(`unix:${file}`);
      unixPath = file;
    }
    if (o.port != null) {
      const host = o.host.includes(':') && !o.host.startsWith('[') ? `[${o.host}]` : o.host;
      const port = await this._bind(`${host}:${o.port}`, creds);
      this.addresses.push(`${connectable(host)}:${port}`);
      if (!isLoopback(o.host) && !o.token) {
        this.log.log('warning', `--insecure: port ${port} on ${o.host} takes calls from anyone who can reach it, without a token`);
      }
    }
    if (unixPath !== null && o.packedSocket && !o.tlsCert) await this._startPacked(unixPath);
    this.sessions.startReaper();
    const period = Math.max(0.05, Math.min(1, FIRST_MESSAGE_TIMEOUT / 4, o.leaseSeconds / 4));
    this._idleTimer = setInterval(() => this.endIdleStreams(), period * 1000);
    this._idleTimer.unref();
    this.health.setStatus('', 'SERVING');
    this.health.setStatus(SERVICE_NAME, 'SERVING');
    this.log.log(
      'info',
      `serving ${this.desc.simName} on ${this.addresses.join(', ')} (max ${o.maxSessions} sessions, ` +
        `lease ${o.leaseSeconds} s, ${o.token ? 'token' : 'no token'}` +
        `${this.packed ? `, packed socket ${this.packed.path}` : ''})`
    );
    return this.addresses;
  }

  async _startPacked(grpcPath) {
    const file = grpcPath + PACKED_SUFFIX;
    if (existsSync(file)) {
      if (!lstatSync(file).isSocket() || (await socketAlive(file))) {
        this.log.log('warning', `packed socket ${file} is in use or not a socket: not served`);
        return;
      }
      unlinkSync(file);
    }
    const packed = new PackedSocketServer(this.sessions, file, {
      token: this.options.token,
      maxMessageBytes: this.options.maxMessageBytes,
      maxConnections: this.options.maxSessions,
      mode: statSync(grpcPath).mode & 0o777,
      idleTimeout: this.options.leaseSeconds,
      logger: this.log,
      onFailure: (c, id, exc) => this._logFailure(c, id, exc),
    });
    try {
      await packed.start();
    } catch (exc) {
      this.log.log('warning', `packed socket ${file} not served: ${exc.message}`);
      return;
    }
    this.packed = packed; // from now on, Open tells clients it is there
  }

  /** Stop accepting calls, let running ones finish for `grace` s, close sessions. */
  async stop(grace = 5) {
    if (this.stopped) return;
    this.stopped = true;
    this.health.setStatus('', 'NOT_SERVING');
    this.health.setStatus(SERVICE_NAME, 'NOT_SERVING');
    clearInterval(this._idleTimer);
    await new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, grace * 1000);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
      // Streams are ended now: a client's stream would otherwise hold the shutdown its grace.
      for (const watch of [...this.streams]) watch.call.end();
    });
    if (this.packed) await this.packed.stop();
    this.sessions.closeAll();
    if (this.options.unix) {
      try {
        unlinkSync(path.resolve(this.options.unix));
      } catch {
        // already gone
      }
    }
    const st = this.sessions.stats;
    this.log.log('info', `stopped (${st.opened} sessions opened, ${st.expired} expired, ${st.hung} hung, ${st.simErrors} sim errors)`);
    this.log.flush();
  }
}
