// Python's `random.Random` in JavaScript: MT19937 seeded as CPython seeds it, and random()
// built from two draws as CPython builds it. So the CSTR sample's measurement noise, seeded
// with the same integer, is the Python sample's draw for draw (tests compare the two through
// the wire).
//
// The algorithm is MT19937 as its authors published it (init_genrand, init_by_array,
// genrand_int32) and CPython's documented use of it: random.seed(n) for an integer n feeds
// abs(n)'s 32-bit words, least significant first, to init_by_array (one word 0 for n = 0);
// random() = (a * 2**26 + b) / 2**53 with a = genrand >> 5 and b = genrand >> 6.

import { getRandomValues } from 'node:crypto';

const N = 624;
const M = 397;

export class PyRandom {
  constructor(seed) {
    this.mt = new Uint32Array(N);
    this.index = N + 1;
    this.seed(seed);
  }

  /**
   * Seed as Python's random.seed(n) does for an integer n (a number or a BigInt); none: from the
   * OS's entropy (as Python's does, 624 words).
   * @param {number|bigint|null|undefined} n
   */
  seed(n) {
    if (n == null) {
      this._initByArray(getRandomValues(new Uint32Array(N)));
      return;
    }
    let rest = BigInt(n);
    if (rest < 0n) rest = -rest;
    const key = [];
    do {
      key.push(Number(rest & 0xffffffffn));
      rest >>= 32n;
    } while (rest > 0n);
    this._initByArray(key);
  }

  _initGenrand(s) {
    const mt = this.mt;
    mt[0] = s >>> 0;
    for (let i = 1; i < N; i++) {
      const prev = mt[i - 1] ^ (mt[i - 1] >>> 30);
      mt[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
    this.index = N;
  }

  _initByArray(key) {
    const mt = this.mt;
    this._initGenrand(19650218);
    let i = 1;
    let j = 0;
    for (let k = Math.max(N, key.length); k > 0; k--) {
      const prev = mt[i - 1] ^ (mt[i - 1] >>> 30);
      mt[i] = ((mt[i] ^ Math.imul(prev, 1664525)) + key[j] + j) >>> 0;
      i++;
      j++;
      if (i >= N) {
        mt[0] = mt[N - 1];
        i = 1;
      }
      if (j >= key.length) j = 0;
    }
    for (let k = N - 1; k > 0; k--) {
      const prev = mt[i - 1] ^ (mt[i - 1] >>> 30);
      mt[i] = ((mt[i] ^ Math.imul(prev, 1566083941)) - i) >>> 0;
      i++;
      if (i >= N) {
        mt[0] = mt[N - 1];
        i = 1;
      }
    }
    mt[0] = 0x80000000; // MSB is 1, assuring a non-zero initial array
    this.index = N;
  }

  _twist() {
    const mt = this.mt;
    for (let kk = 0; kk < N; kk++) {
      const y = (mt[kk] & 0x80000000) | (mt[(kk + 1) % N] & 0x7fffffff);
      mt[kk] = mt[(kk + M) % N] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
    }
    this.index = 0;
  }

  /** The next 32-bit output. */
  uint32() {
    if (this.index >= N) this._twist();
    let y = this.mt[this.index++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** A float in [0, 1), as Python's random.random(). */
  random() {
    const a = this.uint32() >>> 5;
    const b = this.uint32() >>> 6;
    return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
  }
}
