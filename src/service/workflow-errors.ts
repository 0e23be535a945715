/** gRPC status codes the Temporal client reports (in a ServiceError that carries `details`). */
export const GRPC_DEADLINE_EXCEEDED = 4;
export const GRPC_UNAVAILABLE = 14;

/** The gRPC status of a Temporal client error, digging through its causes; undefined for other errors. */
export function grpcStatus(err: unknown): number | undefined {
  for (let cur: unknown = err, depth = 0; cur && typeof cur === 'object' && depth < 5; depth++) {
    const c = (cur as { code?: unknown }).code;
    if (typeof c === 'number' && 'details' in (cur as object)) return c;
    cur = (cur as { cause?: unknown }).cause;
  }
  return undefined;
}
