/**
 * Worker SIGKILLed in a host control step (quiesce, pause, create, swap, retire; see
 * support/kill-matrix.ts). These steps have no heartbeat timeout, so the dead worker's attempt is
 * retried only after their 60 s start-to-close timeout, with the sandbox stopped meanwhile: each case
 * takes over a minute. A file of its own, so it runs beside the rest of the matrix.
 */
import { KILL_CASES, killMatrix } from './support/kill-matrix.js';

killMatrix(KILL_CASES.filter((c) => c.slow));
