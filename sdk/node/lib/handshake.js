// The handshake both transports share: the bearer token and the protocol version
// (simserver/handshake.py's rules and messages).

import { timingSafeEqual } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { SimServerError, clip } from './errors.js';
import { PROTOCOL } from './proto.js';

export const WRONG_TOKEN = 'missing or wrong token';

/** Constant-time comparison (a timing difference must not reveal the token). */
export function sameSecret(given, expected) {
  const a = Buffer.from(String(given));
  const b = Buffer.from(expected);
  if (a.length !== b.length) {
    timingSafeEqual(b, b); // the same work either way
    return false;
  }
  return timingSafeEqual(a, b);
}

/** Admit a client speaking this server's protocol (or not saying which); else FAILED_PRECONDITION. */
export function checkProtocol(spoken) {
  if (spoken && spoken !== PROTOCOL) {
    throw new SimServerError(
      `protocol mismatch: client speaks ${clip(spoken)}, this server speaks ${PROTOCOL}; upgrade the older side`,
      status.FAILED_PRECONDITION
    );
  }
}
