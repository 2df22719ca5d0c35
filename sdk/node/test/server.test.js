// The server over real sockets, driven by a grpc-js client on the same proto: the rules of
// proto/simgym/v1/simulator.proto and simserver's status codes and messages.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { SlowToy, Toy, Undeclared } from './sims.js';
import { connect, rejection, startServer, status } from './helpers.js';

const config = (obj) => ({ fields: Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, { numberValue: v }])) });
const num = (x) => (typeof x === 'number' ? x : x.toNumber());

describe('unary calls', () => {
  let srv;
  let c;
  before(async () => {
    srv = await startServer(Toy, { maxSessions: 3 });
    c = connect(srv.address);
  });
  after(async () => {
    c.close();
    await srv.server.stop(0);
  });

  test('Open returns names, bounds, lease and the server', async () => {
    const open = await c.call('Open', { protocol: 'simgym.v1', client: 'test', lease_seconds: 1e9 });
    assert.equal(open.protocol, 'simgym.v1');
    assert.equal(open.sim_name, 'Toy');
    assert.match(open.server, /^simgym-node /);
    assert.deepEqual(open.states.map((v) => v.name), ['x', 't']);
    assert.equal(open.states[1].high, 100);
    assert.equal(Object.hasOwn(open.states[0], 'low'), false); // undeclared bounds stay absent
    assert.deepEqual(open.actions.map((v) => [v.name, v.low, v.high]), [['u', -1, 1]]);
    assert.deepEqual(open.config.map((v) => v.name), ['x0', 'horizon']);
    assert.equal(open.lease_seconds, 300); // capped to the server's
    assert.equal(open.seedable, true);
    assert.equal(num(open.max_message_bytes), 16 * 2 ** 20);
    assert.equal(open.packed_socket, false); // TCP only
    await c.call('Close', { session_id: open.session_id });
  });

  test('another protocol is FAILED_PRECONDITION naming both', async () => {
    const err = await rejection(c.call('Open', { protocol: 'simgym.v9' }));
    assert.equal(err.code, status.FAILED_PRECONDITION);
    assert.match(err.details, /client speaks simgym.v9, this server speaks simgym.v1/);
  });

  test('other action names are INVALID_ARGUMENT; the same in another order are fine', async () => {
    const err = await rejection(c.call('Open', { action_names: ['v'] }));
    assert.equal(err.code, status.INVALID_ARGUMENT);
    assert.match(err.details, /client actions \['v'\] do not match the sim's actions \['u'\]/);
    const bad = await rejection(c.call('Open', { lease_seconds: -1 }));
    assert.equal(bad.code, status.INVALID_ARGUMENT);
  });

  test('step before reset, reset, step, retry, episode end, States, Termination', async () => {
    const { session_id: id } = await c.call('Open', {});
    const early = await rejection(c.call('Step', { session_id: id, action: [0.5], seq: 1 }));
    assert.equal(early.code, status.FAILED_PRECONDITION);
    assert.match(early.details, /no episode is running in this session: call Reset first/);
    const reset = await c.call('Reset', { session_id: id, config: config({ x0: 2, horizon: 2 }), seed: 500, seq: 1 });
    assert.deepEqual(reset.transition.states, [2.5, 0]);
    assert.equal(num(reset.transition.step), 0);
    const first = await c.call('Step', { session_id: id, action: [0.5], seq: 2 });
    assert.deepEqual(first.transition.states, [3, 1]);
    // The same seq again: the stored reply, not a second step.
    const again = await c.call('Step', { session_id: id, action: [0.5], seq: 2 });
    assert.deepEqual(again.transition.states, [3, 1]);
    assert.equal(num(again.transition.step), 1);
    const last = await c.call('Step', { session_id: id, action: [1], seq: 3 });
    assert.equal(last.transition.truncated, true);
    assert.equal(Object.hasOwn(last.transition, 'reward'), false);
    const over = await rejection(c.call('Step', { session_id: id, action: [1], seq: 4 }));
    assert.equal(over.code, status.FAILED_PRECONDITION);
    assert.deepEqual((await c.call('States', { session_id: id })).states, [4, 2]);
    const flags = await c.call('Termination', { session_id: id });
    assert.deepEqual([flags.terminated, flags.truncated], [false, true]);
    await c.call('Close', { session_id: id });
    await c.call('Close', { session_id: id }); // idempotent
    const gone = await rejection(c.call('States', { session_id: id }));
    assert.equal(gone.code, status.NOT_FOUND);
    assert.match(gone.details, /^unknown session [0-9a-f]{8}: it was closed, expired/);
  });

  test('bad actions and configs are INVALID_ARGUMENT and never reach the sim', async () => {
    const { session_id: id } = await c.call('Open', {});
    await c.call('Reset', { session_id: id, seq: 1 });
    const long = await rejection(c.call('Step', { session_id: id, action: [0, 0], seq: 2 }));
    assert.equal(long.code, status.INVALID_ARGUMENT);
    assert.equal(long.details, "action has 2 value(s); this session expects 1: ['u']");
    const nan = await rejection(c.call('Step', { session_id: id, action: [NaN], seq: 2 }));
    assert.equal(nan.details, "action 'u' is nan; actions must be finite");
    const key = await rejection(c.call('Reset', { session_id: id, config: config({ y: 1 }), seq: 2 }));
    assert.equal(key.details, "unknown config key(s) ['y']; the sim accepts ['horizon', 'x0']");
    const inf = await rejection(c.call('Reset', { session_id: id, config: config({ x0: Infinity }), seq: 2 }));
    assert.equal(inf.details, 'config x0 is not finite; config values must be');
    const ok = await c.call('Step', { session_id: id, action: [1], seq: 2 });
    assert.equal(num(ok.transition.step), 1); // the refused calls applied nothing
    await c.call('Close', { session_id: id });
  });

  test('a sim that throws is INTERNAL naming the call; the session can be reset', async () => {
    const { session_id: id } = await c.call('Open', {});
    await c.call('Reset', { session_id: id, seq: 1 });
    const boom = await rejection(c.call('Step', { session_id: id, action: [99], seq: 2 }));
    assert.equal(boom.code, status.INTERNAL);
    assert.equal(boom.details, 'sim step() raised TypeError: boom');
    const after = await rejection(c.call('Step', { session_id: id, action: [0], seq: 3 }));
    assert.equal(after.code, status.FAILED_PRECONDITION); // the episode is over
    const cursed = await rejection(c.call('Reset', { session_id: id, config: config({ x0: 666 }), seq: 4 }));
    assert.equal(cursed.details, 'sim reset() raised RangeError: x0 666 is cursed');
    await c.call('Reset', { session_id: id, seq: 5 });
    await c.call('Step', { session_id: id, action: [0], seq: 6 });
    await c.call('Close', { session_id: id });
  });

  test('the session limit is RESOURCE_EXHAUSTED; closing frees a slot', async () => {
    const ids = [];
    for (let i = 0; i < 3; i++) ids.push((await c.call('Open', {})).session_id);
    const full = await rejection(c.call('Open', {}));
    assert.equal(full.code, status.RESOURCE_EXHAUSTED);
    assert.match(full.details, /session limit reached \(3 open\)/);
    await c.call('Close', { session_id: ids.pop() });
    ids.push((await c.call('Open', {})).session_id);
    for (const id of ids) await c.call('Close', { session_id: id });
  });
});

describe('PackedStream', () => {
  let srv;
  let c;
  before(async () => {
    srv = await startServer(Toy, { maxSlots: 4 });
    c = connect(srv.address);
  });
  after(async () => {
    c.close();
    await srv.server.stop(0);
  });

  test('slots run in order with resets; a failing slot fails alone; retries per slot', async () => {
    const a = (await c.call('Open', {})).session_id;
    const b = (await c.call('Open', {})).session_id;
    const s = c.stream();
    const first = await s.send({
      session_ids: [a, b, 'ghost'],
      actions: [0, 0, 0],
      seqs: [1, 1, 1],
      resets: [{ slot: 0, config: config({ x0: 1 }) }, { slot: 1, seed: 2000 }],
    });
    assert.equal(first.state_width, 2);
    assert.deepEqual(first.states.slice(0, 4), [1, 0, 2, 0]);
    assert.ok(first.states.slice(4).every(Number.isNaN)); // the failed slot's row
    assert.deepEqual(first.errors.map((e) => [e.slot, e.code]), [[2, status.NOT_FOUND]]);
    assert.deepEqual(first.nonfinite, []);
    const second = await s.send({ session_ids: [a, b, a], actions: [1, 99, 1], seqs: [2, 2, 3] });
    assert.deepEqual(second.states.slice(0, 2), [2, 1]);
    assert.deepEqual(second.states.slice(4), [3, 2]); // slot 2 steps a again, after slot 0
    assert.deepEqual(second.steps.map(num), [1, 0, 2]);
    assert.deepEqual(second.errors.map((e) => [e.slot, e.code, e.message]), [[1, status.INTERNAL, 'sim step() raised TypeError: boom']]);
    const retried = await s.send({ session_ids: [a], actions: [1], seqs: [3] }); // a's last seq
    assert.deepEqual(retried.states, [3, 2]);
    s.end();
  });

  test('a malformed request ends the stream with INVALID_ARGUMENT, nothing applied', async () => {
    const a = (await c.call('Open', {})).session_id;
    await c.call('Reset', { session_id: a, seq: 1 });
    for (const [request, message] of [
      [{ session_ids: [a], actions: [1], seqs: [2, 3] }, 'seqs has 2 value(s) for 1 session(s)'],
      [{ session_ids: [a, a], actions: [1, 1, 1] }, 'actions has 3 value(s) for 2 session(s)'],
      [{ session_ids: [a], actions: [1], resets: [{ slot: 1 }] }, 'resets names slot 1; the request has 1 session(s)'],
      [{ session_ids: [a], actions: [1], slot_timeout_seconds: -1 }, 'slot_timeout_seconds is -1'],
    ]) {
      const err = await rejection(c.stream().send(request));
      assert.equal(err.code, status.INVALID_ARGUMENT);
      assert.ok(err.details.startsWith(message), err.details);
    }
    const many = await rejection(c.stream().send({ session_ids: [a, a, a, a, a], actions: [0, 0, 0, 0, 0] }));
    assert.equal(many.code, status.RESOURCE_EXHAUSTED);
    assert.match(many.details, /at most 4 per request/);
    assert.deepEqual((await c.call('States', { session_id: a })).states, [0, 0]);
  });

  test('sim rewards and non-finite states are reported per slot', async () => {
    const { server, address } = await startServer(Undeclared);
    const u = connect(address);
    try {
      const missing = await rejection(u.call('Open', {}));
      assert.match(missing.details, /the sim does not declare its action names/);
      const id = (await u.call('Open', { action_names: ['a', 'b'] })).session_id;
      const s = u.stream();
      const reset = await s.send({ session_ids: [id], actions: [0, 0], resets: [{ slot: 0 }] });
      assert.deepEqual(reset.rewards, [-0]);
      const step = await s.send({ session_ids: [id, 'nope'], actions: [3, 0, 0, 0] });
      assert.ok(Number.isNaN(step.states[0]));
      assert.deepEqual(step.nonfinite, [0]);
      assert.equal(step.rewards[0], -3);
      assert.ok(Number.isNaN(step.rewards[1])); // the failed slot's
      s.end();
    } finally {
      u.close();
      await server.stop(0);
    }
  });
});

describe('asynchronous sims, leases and streams', () => {
  test('a session busy in a call is ABORTED for a second one', async () => {
    const { server, address } = await startServer(SlowToy);
    const c = connect(address);
    try {
      const id = (await c.call('Open', {})).session_id;
      const slow = c.call('Reset', { session_id: id, seq: 1 });
      await new Promise((r) => setTimeout(r, 50));
      const busy = await rejection(c.call('Reset', { session_id: id, seq: 2 }));
      assert.equal(busy.code, status.ABORTED);
      assert.match(busy.details, /is busy: sim reset\(\) has been running for/);
      await slow;
      const s = c.stream();
      const reply = await s.send({ session_ids: [id, id], actions: [1, 1], seqs: [3, 4] });
      assert.deepEqual(reply.states, [1, 1, 2, 2]); // in order, each awaited
      s.end();
    } finally {
      c.close();
      await server.stop(0);
    }
  });

  test('an idle session expires after its lease', async () => {
    const { server, address } = await startServer(Toy, { leaseSeconds: 0.2 });
    const c = connect(address);
    try {
      const id = (await c.call('Open', {})).session_id;
      await c.call('Reset', { session_id: id, seq: 1 });
      await new Promise((r) => setTimeout(r, 600));
      const gone = await rejection(c.call('Step', { session_id: id, action: [0], seq: 2 }));
      assert.equal(gone.code, status.NOT_FOUND);
      assert.equal(server.sessions.stats.expired, 1);
    } finally {
      c.close();
      await server.stop(0);
    }
  });

  test('streams beyond --max-streams are RESOURCE_EXHAUSTED; a silent one is ended', async () => {
    const { server, address } = await startServer(Toy, { maxStreams: 1 });
    const c = connect(address);
    try {
      const id = (await c.call('Open', {})).session_id;
      const one = c.stream();
      await one.send({ session_ids: [id], actions: [0], resets: [{ slot: 0 }] });
      const two = await rejection(c.stream().send({ session_ids: [id], actions: [0] }));
      assert.equal(two.code, status.RESOURCE_EXHAUSTED);
      assert.match(two.details, /at most 1 streams at once/);
      // The watchdog ends a stream idle past the lease (300 s here: asked as of 301 s later).
      assert.equal(server.endIdleStreams(performance.now() + 301_000), 1);
      const ended = await rejection(one.send({ session_ids: [id], actions: [0] }));
      assert.equal(ended.code, status.CANCELLED);
      assert.match(ended.details, /stream ended by the server: no message for 300 s/);
    } finally {
      c.close();
      await server.stop(0);
    }
  });

  test('a message over --max-message-mb is RESOURCE_EXHAUSTED', async () => {
    const { server, address } = await startServer(Toy, { maxMessageBytes: 2 ** 20 });
    const c = connect(address);
    try {
      const id = (await c.call('Open', {})).session_id;
      const err = await rejection(c.call('Step', { session_id: id, action: new Array(200_000).fill(0), seq: 1 }));
      assert.equal(err.code, status.RESOURCE_EXHAUSTED);
    } finally {
      c.close();
      await server.stop(0);
    }
  });
});

describe('token and health', () => {
  let srv;
  before(async () => {
    srv = await startServer(Toy, { token: 's3cret' });
  });
  after(async () => {
    await srv.server.stop(0);
  });

  test('calls without the token, or with another, are UNAUTHENTICATED', async () => {
    for (const token of [null, 'wrong', 's3cret-not']) {
      const c = connect(srv.address, token);
      const err = await rejection(c.call('Open', {}));
      assert.equal(err.code, status.UNAUTHENTICATED);
      assert.equal(err.details, "missing or wrong token (send 'authorization: Bearer <token>')");
      const stream = await rejection(c.stream().send({ session_ids: [] }));
      assert.equal(stream.code, status.UNAUTHENTICATED);
      c.close();
    }
    const ok = connect(srv.address, 's3cret');
    const { session_id: id } = await ok.call('Open', {});
    await ok.call('Close', { session_id: id });
    ok.close();
  });

  test('health answers SERVING without a token', async () => {
    const grpc = await import('@grpc/grpc-js');
    const loader = await import('@grpc/proto-loader');
    const { protoPath } = await import('grpc-health-check');
    const def = grpc.loadPackageDefinition(loader.loadSync(protoPath, { enums: String }));
    const client = new def.grpc.health.v1.Health(srv.address, grpc.credentials.createInsecure());
    for (const service of ['', 'simgym.v1.Simulator']) {
      const reply = await new Promise((resolve, reject) =>
        client.Check({ service }, (err, r) => (err ? reject(err) : resolve(r)))
      );
      assert.equal(reply.status, 'SERVING');
    }
    client.close();
  });
});

describe('hung calls and TLS', () => {
  test('an async call past its deadline plus --hung-grace lets its session go', async () => {
    let release;
    const Stuck = {
      simName: 'Stuck',
      states: ['x'],
      actions: ['u'],
      closed: 0,
      create: () => ({
        reset: () => ({ x: 0 }),
        step: () => new Promise((resolve) => (release = () => resolve({ x: 1 }))),
        close: () => (Stuck.closed += 1),
      }),
    };
    const { server, address } = await startServer(Stuck, { hungGrace: 0.1, maxSessions: 1 });
    const c = connect(address, null, { deadline: 0.2 });
    try {
      const id = (await c.call('Open', {})).session_id;
      await c.call('Reset', { session_id: id, seq: 1 });
      const late = await rejection(c.call('Step', { session_id: id, action: [0], seq: 2 }));
      assert.equal(late.code, status.DEADLINE_EXCEEDED);
      assert.equal(server.sessions.reap(performance.now() / 1000 + 0.15), 0); // not yet: 0.2 + 0.1 s
      server.sessions.reap(performance.now() / 1000 + 0.5);
      assert.equal(server.sessions.stats.hung, 1);
      const gone = await rejection(c.call('States', { session_id: id }));
      assert.equal(gone.code, status.NOT_FOUND);
      const fresh = (await c.call('Open', {})).session_id; // its slot is free again
      assert.equal(Stuck.closed, 0); // the call still runs: its sim is closed when it returns
      release();
      await new Promise((r) => setTimeout(r, 20));
      assert.equal(Stuck.closed, 1);
      await c.call('Close', { session_id: fresh });
    } finally {
      c.close();
      await server.stop(0);
    }
  });

  test('TLS with a token: a client with the CA gets in, a plaintext one does not', async () => {
    const { spawnSync } = await import('node:child_process');
    const { mkdtempSync, readFileSync } = await import('node:fs');
    const os = await import('node:os');
    const path = await import('node:path');
    const dir = mkdtempSync(path.join(os.tmpdir(), 'sgn-tls-'));
    const made = spawnSync('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
      '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'),
      '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    ]);
    assert.equal(made.status, 0, String(made.stderr));
    const { server, address } = await startServer(Toy, {
      tlsCert: path.join(dir, 'cert.pem'),
      tlsKey: path.join(dir, 'key.pem'),
      token: 't0k',
    });
    const target = `localhost:${address.split(':')[1]}`;
    const good = connect(target, 't0k', { ca: readFileSync(path.join(dir, 'cert.pem')) });
    const plain = connect(target, 't0k', { deadline: 1 });
    try {
      const { session_id: id } = await good.call('Open', {});
      await good.call('Reset', { session_id: id, seq: 1 });
      assert.equal(num((await good.call('Step', { session_id: id, action: [1], seq: 2 })).transition.step), 1);
      const refused = await rejection(plain.call('Open', {}));
      assert.equal(refused.code, status.UNAVAILABLE);
    } finally {
      good.close();
      plain.close();
      await server.stop(0);
    }
  });
});

describe('discrete actions (Variable.values)', () => {
  test('declared values travel in Open; any number reaches the sim as the nearest value', async () => {
    const seen = [];
    const Gear = {
      simName: 'Gear',
      states: ['g'],
      actions: [{ name: 'gear', values: [1, 2, 4] }, 'throttle'],
      create: () => ({
        reset: () => ({ g: 0 }),
        step: (a) => {
          seen.push(a);
          return { g: a.gear };
        },
      }),
    };
    const { server, address } = await startServer(Gear);
    const c = connect(address);
    try {
      const open = await c.call('Open', { integer_actions: ['gear'] });
      assert.deepEqual(open.actions.map((v) => [v.name, v.values, v.low ?? undefined, v.high ?? undefined]), [
        ['gear', [1, 2, 4], 1, 4],
        ['throttle', [], undefined, undefined],
      ]);
      const id = open.session_id;
      await c.call('Reset', { session_id: id, seq: 1 });
      await c.call('Step', { session_id: id, action: [3.4, 0.5], seq: 2 });
      await c.call('Step', { session_id: id, action: [2, 0.25], seq: 3 });
      assert.deepEqual(seen, [{ gear: 4, throttle: 0.5 }, { gear: 2, throttle: 0.25 }]);
    } finally {
      c.close();
      await server.stop(0);
    }
  });
});
