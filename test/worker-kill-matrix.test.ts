/**
 * Worker SIGKILLed at each step of each operation type (see support/kill-matrix.ts), for the steps
 * a new worker takes over within seconds: heartbeating data movers (15 s heartbeat timeout) and
 * catalog steps (local activities: the workflow task times out after 10 s).
 */
import { KILL_CASES, killMatrix } from './support/kill-matrix.js';

killMatrix(KILL_CASES.filter((c) => !c.slow));
