// Plain JS so the restore's worker threads and the main thread share it (workers load .mjs files).

/**
 * A manifest's nanosecond time as the seconds utimes takes. utimes takes a double, which at
 * today's epoch resolves about 240 ns: whole seconds plus the fraction give the nearest such
 * value (within 120 ns), where going through microseconds first is up to a microsecond off.
 * Node has no call that takes nanoseconds (nodejs/node#50859).
 */
export function utimesSeconds(ns) {
  const n = BigInt(ns);
  const whole = Number(n / 1_000_000_000n);
  let seconds = whole + Number(n % 1_000_000_000n) / 1e9;
  // The nearest double can be the next (or, before 1970, the previous) whole second: .999999999
  // would become the next second, which tools that keep whole seconds (tar) then show. Stay within it.
  if (Math.trunc(seconds) !== whole && seconds !== whole) seconds = whole + Math.sign(Number(n)) * 0.999999;
  // Node takes a negative number (a time before 1970) for "now"; a numeric string it takes as it is.
  return seconds < 0 ? String(seconds) : seconds;
}
