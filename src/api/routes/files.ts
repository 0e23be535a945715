import type { SandboxRow } from '../../catalog/schema.js';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { finished, Transform, type Readable, type Writable } from 'node:stream';
import type { AppContext } from '../../service/context.js';
import { accountOf } from '../auth.js';
import { sandboxIdParam } from './sandboxes.js';
import { getAccountSandbox } from '../../catalog/sandboxes.js';
import { recordActivity } from '../../service/operations.js';
import { CagedError } from '../../shared/errors.js';

function tooLarge(max: number): CagedError {
  return new CagedError('too_large', `the file is larger than the upload limit of ${max} bytes (CAGED_MAX_FILE_UPLOAD_BYTES)`, { max });
}

/** Passes at most max bytes on; one more fails the stream with too_large. */
function capBytes(max: number): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      if (seen > max) return cb(tooLarge(max));
      cb(null, chunk);
    },
  });
}

// After a 413 mid-upload, this much more of the body (or this long) is read and dropped so the
// client, still sending, reads the answer instead of a reset; past that the connection is cut.
const DRAIN_BYTES = 64 * 1024 * 1024;
const DRAIN_MS = 10_000;

function drainThenDrop(source: Readable, from: Writable): void {
  source.unpipe(from);
  let drained = 0;
  const cut = setTimeout(() => source.destroy(), DRAIN_MS).unref();
  source.on('data', (chunk: Buffer) => {
    drained += chunk.length;
    if (drained > DRAIN_BYTES) source.destroy();
  });
  finished(source, () => clearTimeout(cut));
  source.resume();
}

/**
 * Raw file access inside a sandbox. Registered in its own scope whose only body parser passes the
 * request stream through, so uploads are streamed to disk whatever their content type.
 */
/**
 * Files change only in a running sandbox: a paused one's tree is what its auto snapshot holds, and
 * a write acknowledged now would be missing from it.
 */
function assertWritable(sandbox: SandboxRow): void {
  if (sandbox.state === 'creating') throw new CagedError('invalid_state', `sandbox ${sandbox.id} is still being created`);
  if (sandbox.state !== 'running') throw new CagedError('invalid_state', `sandbox ${sandbox.id} is ${sandbox.state}; resume it first`);
}

export async function fileRoutes(app: FastifyInstance, ctx: AppContext) {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, payload, done) => done(null, payload));

  const target = async (req: FastifyRequest) => {
    const params = req.params as { id: string; '*': string };
    const { id } = sandboxIdParam.parse({ id: params.id });
    const path = params['*'];
    if (!path) throw new CagedError('invalid_input', 'a file path is required after /files/');
    const sandbox = await getAccountSandbox(ctx.db, accountOf(req).id, id);
    return { sandbox, path };
  };

  app.put('/v1/sandboxes/:id/files/*', async (req, reply) => {
    const { sandbox, path } = await target(req);
    assertWritable(sandbox);
    const max = ctx.config.limits.maxFileUploadBytes;
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (declared > max) {
      // Refused before a byte is read; the connection closes rather than draining the rest.
      reply.header('connection', 'close');
      throw tooLarge(max);
    }
    const source = (req.body as Readable | undefined) ?? req.raw;
    const body = source.pipe(capBytes(max));
    // A client that goes away fails the write (pipe alone would leave it waiting); the cap's own
    // error leaves the request open so that the 413 can still be sent.
    finished(source, (err) => {
      if (err) body.destroy(err);
    });
    try {
      await ctx.runtime.writeFile(sandbox.id, path, body);
    } catch (err) {
      if (err instanceof CagedError && err.code === 'too_large') drainThenDrop(source, body);
      // The write went to a root that a restore swapped out meanwhile: nothing was written.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new CagedError('conflict', `the files of sandbox ${sandbox.id} were replaced while this upload ran (a restore); nothing was written, upload again`);
      throw err;
    }
    await recordActivity(ctx, sandbox);
    return reply.status(204).send();
  });

  app.get('/v1/sandboxes/:id/files/*', async (req, reply) => {
    const { sandbox, path } = await target(req);
    const stream = await ctx.runtime.readFile(sandbox.id, path);
    await recordActivity(ctx, sandbox);
    return reply.type('application/octet-stream').send(stream);
  });

  app.delete('/v1/sandboxes/:id/files/*', async (req, reply) => {
    const { sandbox, path } = await target(req);
    assertWritable(sandbox);
    await ctx.runtime.deleteFile(sandbox.id, path);
    await recordActivity(ctx, sandbox);
    return reply.status(204).send();
  });
}
