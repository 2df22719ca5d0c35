// Test helpers: a real grpc-js client on the contract loaded from proto/, real servers.

import * as grpc from '@grpc/grpc-js';
import { contract } from '../lib/proto.js';
import { Logger } from '../lib/log.js';
import { SimServer } from '../lib/server.js';

const Client = grpc.makeGenericClientConstructor(contract().service, 'Simulator');

/** A quiet server (warnings and errors only) for `sim`, started on loopback TCP. */
export async function startServer(sim, options = {}) {
  const lines = [];
  const logger = new Logger('WARNING', (line) => lines.push(line));
  const server = new SimServer(sim, { port: 0, logger, ...options });
  const addresses = await server.start();
  server.logLines = lines;
  return { server, address: addresses[0], addresses };
}

/** A client whose unary calls return Promises; `token` goes in every call's metadata. */
export function connect(address, token = null, { ca = null, deadline = 10 } = {}) {
  const creds = ca ? grpc.credentials.createSsl(ca) : grpc.credentials.createInsecure();
  const client = new Client(address, creds, {
    'grpc.max_receive_message_length': 64 * 1024 * 1024,
    'grpc.max_send_message_length': 64 * 1024 * 1024,
  });
  const metadata = () => {
    const md = new grpc.Metadata();
    if (token !== null) md.set('authorization', `Bearer ${token}`);
    return md;
  };
  const call = (method, request) =>
    new Promise((resolve, reject) => {
      client[method](request, metadata(), { deadline: Date.now() + deadline * 1000 }, (err, reply) =>
        err ? reject(err) : resolve(reply)
      );
    });
  /** A lock-step PackedStream: send(request) resolves with its reply or rejects with the status. */
  const stream = () => {
    const s = client.PackedStream(metadata());
    const waiting = [];
    let failure = null;
    s.on('data', (reply) => waiting.shift()?.resolve(reply));
    s.on('error', (err) => {
      failure = err;
      for (const w of waiting.splice(0)) w.reject(err);
    });
    return {
      send(request) {
        if (failure) return Promise.reject(failure);
        return new Promise((resolve, reject) => {
          waiting.push({ resolve, reject });
          s.write(request);
        });
      },
      end() {
        s.end();
      },
      raw: s,
    };
  };
  return { client, call, stream, close: () => client.close() };
}

/** Resolves with the error a promise rejects with (fails when it resolves). */
export async function rejection(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected the call to fail; it succeeded');
}

export const status = grpc.status;
