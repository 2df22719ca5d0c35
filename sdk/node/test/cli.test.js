// `npm run sample`'s command line (simserver's flags) and the packed socket, on real sockets
// of a real child process.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { contract } from '../lib/proto.js';
import { frame } from '../lib/packedsocket.js';
import { connect, status } from './helpers.js';

const SAMPLE = fileURLToPath(new URL('../bin/sample.js', import.meta.url));
const tmp = mkdtempSync(path.join(os.tmpdir(), 'sgn-'));

/** Start the sample; resolves once its address file is written. */
function startSample(args) {
  const child = spawn(process.execPath, [SAMPLE, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  const ready = new Promise((resolve, reject) => {
    const poll = setInterval(() => {
      if (stdout.includes('\n')) {
        clearInterval(poll);
        resolve();
      }
    }, 20);
    exited.then((code) => {
      clearInterval(poll);
      reject(new Error(`the sample exited with ${code}: ${stderr}`));
    });
  });
  return { child, ready, exited, out: () => stdout, err: () => stderr };
}

test('usage errors are one line on stderr and exit code 2', () => {
  for (const [args, message] of [
    [['--port', '70000'], '--port 70000: a TCP port is 0 (any free one) to 65535'],
    [['--host', '0.0.0.0'], '--host 0.0.0.0 exposes the sim beyond this machine: give --token'],
    [['--max-sessions', '0'], '--max-sessions 0: give a whole number from 1 to 10000'],
    [['--token', ' '], '--token: the token is empty or only whitespace'],
    [['--bogus'], "Unknown option '--bogus'"],
    [['--address-file', '/no/such/dir/a.txt'], '--address-file /no/such/dir/a.txt: the folder /no/such/dir does not exist'],
  ]) {
    const run = spawnSync(process.execPath, [SAMPLE, ...args], { encoding: 'utf8' });
    assert.equal(run.status, 2, args.join(' '));
    assert.equal(run.stdout, '');
    const lines = run.stderr.trim().split('\n');
    assert.equal(lines.length, 1, run.stderr);
    assert.ok(lines[0].startsWith(`simgym-node: error: ${message}`), lines[0]);
  }
});

describe('on TCP with an address file', () => {
  let sample;
  const file = path.join(tmp, 'addr.txt');
  before(async () => {
    sample = startSample(['--port', '0', '--address-file', file]);
    await sample.ready;
  });
  after(async () => {
    sample.child.kill('SIGTERM');
    assert.equal(await sample.exited, 0);
  });

  test('stdout and the address file carry host:port, as simserver writes them', () => {
    const line = sample.out().split('\n')[0];
    assert.match(line, /^127\.0\.0\.1:\d+$/);
    assert.equal(readFileSync(file, 'utf8'), `${line}\n`);
  });

  test('the sample serves the CSTR', async () => {
    const c = connect(readFileSync(file, 'utf8').trim());
    const open = await c.call('Open', {});
    assert.equal(open.sim_name, 'CSTR');
    assert.equal(open.states.length, 13);
    const reset = await c.call('Reset', { session_id: open.session_id, seq: 1 });
    assert.equal(reset.transition.states[4], 292); // Tc
    c.close();
  });
});

describe('on a unix socket with a token: the packed socket', () => {
  let sample;
  const sock = path.join(tmp, 'cstr.sock');
  const types = contract().types;
  const kinds = contract().kinds;
  before(async () => {
    sample = startSample(['--unix', sock, '--token', 'tok']);
    await sample.ready;
  });
  after(async () => {
    sample.child.kill('SIGTERM');
    assert.equal(await sample.exited, 0);
    assert.equal(existsSync(sock), false);
    assert.equal(existsSync(`${sock}.packed`), false);
  });

  /** Frames in, frames out on PATH.packed: resolves with the frames read when it closes or `count` came. */
  function converse(frames, count) {
    return new Promise((resolve, reject) => {
      const s = net.connect(`${sock}.packed`);
      let buf = Buffer.alloc(0);
      const got = [];
      s.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32LE(0)) {
          const n = buf.readUInt32LE(0);
          got.push([buf[4], buf.subarray(5, 4 + n)]);
          buf = buf.subarray(4 + n);
        }
        if (got.length >= count) {
          s.destroy();
          resolve(got);
        }
      });
      s.on('close', () => resolve(got));
      s.on('error', reject);
      for (const f of frames) s.write(f);
    });
  }
  const hello = (token) => frame(kinds.PACKED_SOCKET_KIND_HELLO, types.PackedSocketHello.encode({ protocol: 'simgym.v1', token }).finish());
  const statusOf = ([kind, body]) => {
    assert.equal(kind, kinds.PACKED_SOCKET_KIND_STATUS);
    return types.PackedSocketStatus.decode(body);
  };

  test('the gRPC socket says unix:PATH; Open offers the packed socket with its mode', async () => {
    assert.equal(sample.out().split('\n')[0], `unix:${sock}`);
    assert.equal(statSync(`${sock}.packed`).mode & 0o777, statSync(sock).mode & 0o777);
    const c = connect(`unix:${sock}`, 'tok');
    assert.equal((await c.call('Open', {})).packed_socket, true);
    c.close();
  });

  test('HELLO with the token, then REQUEST/REPLY as on PackedStream', async () => {
    const c = connect(`unix:${sock}`, 'tok');
    const { session_id: id } = await c.call('Open', {});
    const request = (msg) => frame(kinds.PACKED_SOCKET_KIND_REQUEST, types.PackedRequest.encode(msg).finish());
    const frames = await converse(
      [hello('tok'), request({ session_ids: [id], actions: [0], seqs: [1], resets: [{ slot: 0 }] }), request({ session_ids: [id], actions: [1.5], seqs: [2] })],
      3
    );
    assert.equal(statusOf(frames[0]).code, 0);
    const replies = frames.slice(1).map(([kind, body]) => {
      assert.equal(kind, kinds.PACKED_SOCKET_KIND_REPLY);
      return types.PackedReply.decode(body);
    });
    assert.equal(replies[0].state_width, 13);
    assert.equal(replies[1].states[4], 293.5); // Tc moved by the action
    const unary = await c.call('States', { session_id: id });
    assert.deepEqual(unary.states, replies[1].states);
    c.close();
  });

  test('a wrong token, a first frame that is not HELLO, an oversized frame: STATUS, then closed', async () => {
    const wrong = await converse([hello('nope')], 2);
    assert.equal(wrong.length, 1);
    assert.deepEqual({ ...statusOf(wrong[0]) }, { code: status.UNAUTHENTICATED, message: 'missing or wrong token' });
    const notHello = await converse([frame(kinds.PACKED_SOCKET_KIND_REQUEST, Buffer.alloc(0))], 2);
    assert.equal(statusOf(notHello[0]).code, status.INVALID_ARGUMENT);
    const header = Buffer.alloc(4);
    header.writeUInt32LE(17 * 2 ** 20, 0);
    const huge = await converse([header], 2);
    assert.equal(statusOf(huge[0]).code, status.RESOURCE_EXHAUSTED);
    assert.match(statusOf(huge[0]).message, /exceeds the limit of 16777216/);
  });
});
