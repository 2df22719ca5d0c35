// The simgym.v1 contract, loaded at run time from the repository's proto/ folder.
//
// proto/simgym/v1/simulator.proto is the single source of truth: nothing here copies a message
// definition. protobufjs (the library @grpc/proto-loader is built on) reads the file once at
// start-up and gives the message types their encoders and decoders; the gRPC service definition
// grpc-js serves is built from the same file's `service Simulator`. Messages are used as
// protobufjs decodes them (no conversion to plain objects per call): the field names are the
// .proto's own (keepCase), int64/uint64 fields arrive as `Long` (see `toNumber`).

import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** The protocol this kit speaks (OpenRequest.protocol). */
export const PROTOCOL = 'simgym.v1';
/** The service's full name (health reports it too). */
export const SERVICE_NAME = 'simgym.v1.Simulator';
/** The .proto file, relative to the proto folder. */
export const PROTO_FILE = 'simgym/v1/simulator.proto';

/**
 * The folder holding simgym/v1/simulator.proto: $SIMGYM_PROTO_DIR, else the repository's
 * proto/ two levels above this kit (sdk/node/lib -> proto).
 * @returns {string}
 */
export function protoDir() {
  const dir = process.env.SIMGYM_PROTO_DIR || path.resolve(HERE, '..', '..', '..', 'proto');
  if (!existsSync(path.join(dir, PROTO_FILE))) {
    throw new Error(
      `${path.join(dir, PROTO_FILE)} not found: run the kit from the simgym repository ` +
        '(sdk/node) or set SIMGYM_PROTO_DIR to a folder holding simgym/v1/simulator.proto'
    );
  }
  return dir;
}

let cached = null;

/**
 * The loaded contract: message types and the grpc-js service definition.
 * @returns {{root: protobuf.Root, types: Record<string, protobuf.Type>, service: object,
 *   kinds: Record<string, number>, dir: string}}
 */
export function contract() {
  if (cached) return cached;
  const dir = protoDir();
  const root = new protobuf.Root();
  // google/protobuf/*.proto come with protobufjs (its "common" files); the rest from dir.
  root.resolvePath = (_origin, target) =>
    target.startsWith('google/protobuf/') ? target : path.resolve(dir, target);
  root.loadSync(PROTO_FILE, { keepCase: true });
  root.resolveAll();
  const pkg = root.lookup('simgym.v1');
  const types = {};
  for (const nested of pkg.nestedArray) {
    if (nested instanceof protobuf.Type) types[nested.name] = nested;
  }
  const kinds = root.lookupEnum('simgym.v1.PackedSocketKind').values;
  const svc = root.lookupService(SERVICE_NAME);
  const service = {};
  for (const method of svc.methodsArray) {
    const req = method.resolvedRequestType;
    const res = method.resolvedResponseType;
    service[method.name] = {
      path: `/${SERVICE_NAME}/${method.name}`,
      requestStream: Boolean(method.requestStream),
      responseStream: Boolean(method.responseStream),
      requestSerialize: (m) => Buffer.from(req.encode(m).finish()),
      requestDeserialize: (b) => req.decode(b),
      responseSerialize: (m) => Buffer.from(res.encode(m).finish()),
      responseDeserialize: (b) => res.decode(b),
      originalName: method.name,
    };
  }
  cached = { root, types, service, kinds, dir };
  return cached;
}

/**
 * A protobufjs int64/uint64 value (a Long, or a number) as a JS number.
 * @param {number|{toNumber(): number}|null|undefined} value
 * @returns {number}
 */
export function toNumber(value) {
  if (value == null) return 0;
  return typeof value === 'number' ? value : value.toNumber();
}

/**
 * Whether an optional (proto3 `optional`) field was sent.
 * @param {object} message
 * @param {string} field
 */
export function has(message, field) {
  return Object.prototype.hasOwnProperty.call(message, field);
}

/**
 * A google.protobuf.Struct (as decoded) as a plain object. Never throws: NaN or infinite
 * numbers stay numbers, and the session manager refuses them naming their key.
 * @param {object|null|undefined} struct
 * @returns {Record<string, unknown>}
 */
export function structToObject(struct) {
  const out = {};
  if (!struct || !struct.fields) return out;
  for (const [key, value] of Object.entries(struct.fields)) out[key] = fromValue(value);
  return out;
}

function fromValue(value) {
  if (value == null) return null;
  switch (value.kind) {
    case 'numberValue':
      return value.numberValue;
    case 'stringValue':
      return value.stringValue;
    case 'boolValue':
      return value.boolValue;
    case 'structValue':
      return structToObject(value.structValue);
    case 'listValue':
      return (value.listValue?.values ?? []).map(fromValue);
    default:
      return null;
  }
}
