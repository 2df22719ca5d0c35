// simgym sim kit for Node.js: host a JavaScript sim behind the simgym.v1 gRPC contract.
//
//   import { main } from 'simgym-sim-kit';        // or '../lib/index.js' inside the repo
//   class MySim { static states = [...]; static actions = [...]; reset(config, seed) {...} step(action) {...} }
//   main(MySim);                                   // simserver's flags: --port, --unix, --token ...
//
// See README.md beside this folder.

export { main, parseCommandLine } from './cli.js';
export {
  ConfigError,
  FailedPrecondition,
  InvalidArgument,
  ResourceExhausted,
  SessionBusy,
  SessionNotFound,
  SimCallFailed,
  SimServerError,
} from './errors.js';
export { Logger } from './log.js';
export { run as runPacked } from './packed.js';
export { PROTOCOL, SERVICE_NAME, contract, protoDir } from './proto.js';
export { SERVER_NAME, SimServer, VERSION, writeAddressFile } from './server.js';
export { SessionManager } from './sessions.js';
export { describeSim, SimInstance } from './sim.js';
