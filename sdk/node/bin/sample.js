#!/usr/bin/env node
// The CSTR sample served over simgym.v1 with simserver's flags:
//   npm run sample -- --port 0 --address-file addr.txt
//   npm run sample -- --unix /tmp/cstr.sock --token T
import { main } from '../lib/cli.js';
import { CSTR } from '../sample/cstr.js';

await main(CSTR);
