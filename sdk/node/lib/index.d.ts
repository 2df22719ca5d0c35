// Types of the simgym sim kit for TypeScript authors (the kit itself is JavaScript; see
// README.md). test/types/ type-checks a TypeScript sim against these in `npm test`.

/** A state, action or config key: its name, or the name with bounds and a description. */
export type VariableDecl =
  | string
  | {
      name: string;
      low?: number;
      high?: number;
      description?: string;
      /** A discrete action's values (Variable.values): any number sent is rounded to the nearest. */
      values?: number[];
    };

/** A reset's scenario: the Struct the client sent, as a plain object. */
export type Config = Record<string, unknown>;

/** What reset and step return: the states by name, or as numbers in `states` order. */
export type States = Record<string, number | boolean> | ArrayLike<number>;

/** One sim instance (one session). */
export interface SimInstance {
  reset(config: Config, seed?: number): States | Promise<States>;
  /** The action by name, in the order of the sim's `actions` (validated before it gets here). */
  step(action: Record<string, number>): States | Promise<States>;
  /** The episode reached a terminal state (a method, or a boolean field `terminated`). */
  termination?(): boolean;
  terminated?: boolean;
  /** The episode was cut short (a method, or a boolean field `truncated`). */
  truncation?(): boolean;
  truncated?: boolean;
  /** A reward of the sim's own, when it computes one. */
  reward?(): number | null | undefined;
  /** The session ended. */
  close?(): void;
}

/** A sim class: its names as static fields, one instance per session. */
export interface SimClass {
  new (): SimInstance;
  simName?: string;
  states: VariableDecl[];
  actions?: VariableDecl[];
  config?: VariableDecl[];
  seedable?: boolean;
}

/** A sim as a descriptor object instead of a class. */
export interface SimDescriptor {
  simName?: string;
  states: VariableDecl[];
  actions?: VariableDecl[];
  config?: VariableDecl[];
  seedable?: boolean;
  create(): SimInstance;
}

export type Sim = SimClass | SimDescriptor;

export declare class Logger {
  constructor(level?: 'DEBUG' | 'INFO' | 'WARNING' | 'ERROR', write?: (line: string) => void);
  log(level: string, message: string): void;
}

/** SimServer's options: simserver's flags, camel-cased (lib/cli.js maps one to the other). */
export interface ServerOptions {
  host?: string;
  port?: number | null;
  unix?: string | null;
  token?: string | null;
  insecure?: boolean;
  tlsCert?: string | null;
  tlsKey?: string | null;
  maxSessions?: number;
  leaseSeconds?: number;
  hungGrace?: number;
  maxStreams?: number | null;
  maxSlots?: number | null;
  maxMessageBytes?: number;
  packedSocket?: boolean;
  reflection?: boolean;
  logger?: Logger;
}

export declare class SimServer {
  constructor(sim: Sim, options?: ServerOptions);
  /** The bound addresses once started: "host:port", "unix:/path". */
  readonly addresses: string[];
  start(): Promise<string[]>;
  stop(graceSeconds?: number): Promise<void>;
}

/** Parse simserver's flags from argv, serve `sim` until SIGTERM/SIGINT, then exit. */
export declare function main(sim: Sim, argv?: string[]): Promise<void>;

/** A failure of one request, reported to the client with a gRPC status code. */
export declare class SimServerError extends Error {
  constructor(message: string, code?: number);
  code: number;
}
export declare class InvalidArgument extends SimServerError {
  constructor(message: string);
}
export declare class FailedPrecondition extends SimServerError {
  constructor(message: string);
}
export declare class ResourceExhausted extends SimServerError {
  constructor(message: string);
}
export declare class SessionNotFound extends SimServerError {
  constructor(message: string);
}
export declare class SessionBusy extends SimServerError {
  constructor(message: string);
}
export declare class SimCallFailed extends SimServerError {
  constructor(call: string, exc: unknown);
}
export declare class ConfigError extends Error {}

export declare const PROTOCOL: 'simgym.v1';
export declare const SERVICE_NAME: 'simgym.v1.Simulator';
export declare const VERSION: string;
export declare const SERVER_NAME: string;

/** Write the bound address to a file atomically, as simserver's --address-file does. */
export declare function writeAddressFile(file: string, address: string): void;
/** The folder the kit loads simgym/v1/simulator.proto from ($SIMGYM_PROTO_DIR, else the repo's proto/). */
export declare function protoDir(): string;
