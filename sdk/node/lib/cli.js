// The command line of a JS sim server: simserver's own flag names (simserver/cli.py), so a
// launcher, a test or a person starts either the same way:
//
//   node my_sim.js --port 0 --address-file addr.txt     # prints "127.0.0.1:PORT" on stdout
//   node my_sim.js --unix /tmp/sim.sock --token T       # "unix:/tmp/sim.sock"
//
// The bound addresses go to stdout (one a line, the unix one first) and the first one to
// --address-file (written atomically, with a newline); logs go to stderr. A usage error is one
// line on stderr and exit code 2.

import { readFileSync, existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError } from './errors.js';
import { LOG_LEVELS, Logger } from './log.js';
import { DEFAULT_MAX_MESSAGE_BYTES, SimServer, checkRange, writeAddressFile } from './server.js';

const HELP = `Serve a simulator over gRPC (simgym.v1), printing the bound address on stdout.

Options (simserver's names):
  --host HOST            interface for TCP (default 127.0.0.1; else needs --token or --insecure)
  --port PORT            TCP port; 0 picks a free one (default: 0 unless --unix is given)
  --unix PATH            listen on this unix socket (and PATH.packed, the packed socket)
  --address-file FILE    also write the bound address to this file
  --token TOKEN          require 'authorization: Bearer TOKEN' (default: $SIMGYM_TOKEN)
  --token-file FILE      read the token from this file
  --insecure             allow a non-loopback --host without a token
  --tls-cert FILE        PEM certificate chain for TLS (with --tls-key)
  --tls-key FILE         PEM private key for TLS
  --max-sessions N       sessions open at once; more get RESOURCE_EXHAUSTED (64)
  --lease SECONDS        seconds an idle session lives before it is closed (300)
  --hung-grace SECONDS   seconds past its client's deadline before a sim call is hung (30)
  --max-streams N        PackedStreams served at once (default: --max-sessions)
  --max-slots N          slots one packed request may carry (default: 4 x --max-sessions, >= 1024)
  --max-message-mb MIB   largest message (16)
  --no-packed-socket     do not serve PATH.packed beside --unix
  --log-level LEVEL      DEBUG, INFO, WARNING or ERROR (INFO)
  --parent-pid PID       exit when this process is gone (sidecar mode)
  --help                 this text`;

const OPTIONS = {
  host: { type: 'string' },
  port: { type: 'string' },
  unix: { type: 'string' },
  'address-file': { type: 'string' },
  token: { type: 'string' },
  'token-file': { type: 'string' },
  insecure: { type: 'boolean' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'max-sessions': { type: 'string' },
  lease: { type: 'string' },
  'hung-grace': { type: 'string' },
  'max-streams': { type: 'string' },
  'max-slots': { type: 'string' },
  'max-message-mb': { type: 'string' },
  'packed-socket': { type: 'boolean' },
  'no-packed-socket': { type: 'boolean' },
  'log-level': { type: 'string' },
  'parent-pid': { type: 'string' },
  help: { type: 'boolean' },
};

function num(values, flag, fallback, whole = false) {
  const text = values[flag];
  if (text === undefined) return fallback;
  const value = Number(text);
  if (text.trim() === '' || Number.isNaN(value) || (whole && !Number.isInteger(value))) {
    throw new ConfigError(`--${flag} ${text}: give ${whole ? 'a whole number' : 'a number'}`);
  }
  return value;
}

/**
 * Server options from simserver-style arguments.
 * @param {string[]} argv
 * @returns {{options: import('./server.js').ServerOptions, addressFile: string|null,
 *   parentPid: number|null, logLevel: string, help: boolean}}
 * @throws {ConfigError}
 */
export function parseCommandLine(argv, env = process.env) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, strict: true, allowPositionals: false });
  } catch (exc) {
    throw new ConfigError(exc.message.split('\n')[0]);
  }
  const v = parsed.values;
  if (v.help) return { help: true };
  const logLevel = (v['log-level'] ?? 'INFO').toUpperCase();
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new ConfigError(`--log-level ${v['log-level']}: give one of ${LOG_LEVELS.join(', ')}`);
  }
  let token = v.token ?? env.SIMGYM_TOKEN ?? null;
  if (v['token-file'] !== undefined) {
    let text;
    try {
      text = readFileSync(v['token-file'], 'utf8').trim();
    } catch (exc) {
      throw new ConfigError(`--token-file ${v['token-file']}: ${exc.code === 'ENOENT' ? 'No such file or directory' : exc.message}`);
    }
    if (!text) throw new ConfigError(`--token-file ${v['token-file']}: the file is empty`);
    token = text;
  }
  const addressFile = v['address-file'] ?? null;
  if (addressFile !== null) {
    const folder = path.dirname(path.resolve(addressFile));
    if (!existsSync(folder) || !statSync(folder).isDirectory()) {
      throw new ConfigError(`--address-file ${addressFile}: the folder ${path.dirname(addressFile)} does not exist`);
    }
  }
  const parentPid = num(v, 'parent-pid', null, true);
  if (parentPid !== null && parentPid < 1) throw new ConfigError(`--parent-pid ${parentPid}: give a process id (1 or more)`);
  const mib = num(v, 'max-message-mb', DEFAULT_MAX_MESSAGE_BYTES / 2 ** 20);
  checkRange('--max-message-mb', mib, 1, 1024);
  const unix = v.unix ?? null;
  const options = {
    host: v.host ?? '127.0.0.1',
    port: v.port !== undefined ? num(v, 'port', 0, true) : unix ? null : 0,
    unix,
    token,
    insecure: Boolean(v.insecure),
    tlsCert: v['tls-cert'] ?? null,
    tlsKey: v['tls-key'] ?? null,
    maxSessions: num(v, 'max-sessions', 64, true),
    leaseSeconds: num(v, 'lease', 300),
    hungGrace: num(v, 'hung-grace', 30),
    maxStreams: num(v, 'max-streams', null, true),
    maxSlots: num(v, 'max-slots', null, true),
    maxMessageBytes: Math.floor(mib * 2 ** 20),
    packedSocket: !v['no-packed-socket'] && v['packed-socket'] !== false,
  };
  return { options, addressFile, parentPid, logLevel, help: false };
}

/**
 * Parse the command line, serve `sim` until SIGTERM/SIGINT (or the parent's exit), then exit.
 * @param {Function|object} sim a sim class or descriptor (see sim.js)
 * @param {string[]} [argv] default: process.argv.slice(2)
 */
export async function main(sim, argv = process.argv.slice(2)) {
  let server;
  let parsed;
  try {
    parsed = parseCommandLine(argv);
    if (parsed.help) {
      process.stdout.write(`${HELP}\n`);
      return;
    }
    const logger = new Logger(parsed.logLevel);
    server = new SimServer(sim, { ...parsed.options, logger });
    const addresses = await server.start();
    process.stdout.write(addresses.map((a) => `${a}\n`).join(''));
    if (parsed.addressFile !== null) {
      try {
        writeAddressFile(parsed.addressFile, addresses[0]);
      } catch (exc) {
        await server.stop(0);
        throw new ConfigError(`--address-file ${parsed.addressFile}: ${exc.message}`);
      }
    }
  } catch (exc) {
    if (!(exc instanceof ConfigError || exc instanceof TypeError)) throw exc;
    process.stderr.write(`simgym-node: error: ${exc.message}\n`);
    process.exit(2);
  }
  const stop = async (why) => {
    server.log.log('info', `${why}: shutting down`);
    await server.stop(parsed.parentPid ? 1 : 5);
    process.exit(0);
  };
  process.on('SIGTERM', () => stop('signal 15'));
  process.on('SIGINT', () => stop('signal 2'));
  if (parsed.parentPid !== null) {
    // A sidecar must not outlive its trainer, even one killed with SIGKILL.
    setInterval(() => {
      try {
        process.kill(parsed.parentPid, 0);
      } catch (exc) {
        if (exc.code === 'ESRCH') stop(`parent ${parsed.parentPid} is gone`);
      }
    }, 1000);
  }
}
