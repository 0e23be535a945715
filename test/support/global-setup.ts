import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { S3Client, CreateBucketCommand } from '@aws-sdk/client-s3';
import type { TestProject } from 'vitest/node';
import { startTemporalDevServer, type DevServer } from '../../src/runtime/temporal-dev-server.js';
import { freePort, waitForPort, stopChild } from '../../src/runtime/child-process.js';
import { motoServerPath, PROJECT_ROOT } from '../../src/runtime/tools.js';
import { bundleWorkflows } from '../../src/app/workflow-bundle.js';

declare module 'vitest' {
  export interface ProvidedContext {
    temporalAddress: string;
    s3Endpoint: string;
    s3Bucket: string;
    /** The second S3-protocol server (s3rver), same bucket name and credentials. */
    s3rverEndpoint: string;
    databaseUrl: string;
    logDir: string;
    workflowCode: string;
  }
}

const ADMIN_DB_URL = process.env.CAGED_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** One Temporal dev server, two S3-protocol servers (moto, s3rver) and one fresh PostgreSQL database for the whole run. */
export default async function setup(project: TestProject) {
  const logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'caged-test-logs-'));
  const temporalPort = await freePort();
  let temporal: DevServer | undefined;
  let moto: ChildProcess | undefined;
  let s3rver: ChildProcess | undefined;
  const dbName = `caged_test_${process.pid}_${Date.now()}`;
  const admin = new pg.Client({ connectionString: ADMIN_DB_URL });
  try {
    temporal = await startTemporalDevServer({ port: temporalPort, headless: true, logFile: path.join(logDir, 'temporal.log') });

    const motoPort = await freePort();
    const motoLog = fs.openSync(path.join(logDir, 'moto.log'), 'a');
    moto = spawn(motoServerPath(), ['-H', '127.0.0.1', '-p', String(motoPort)], { stdio: ['ignore', motoLog, motoLog] });
    fs.closeSync(motoLog);
    await waitForPort('127.0.0.1', motoPort, 60_000, moto);
    const s3Endpoint = `http://127.0.0.1:${motoPort}`;
    const s3Bucket = 'caged-test';
    const s3 = new S3Client({
      endpoint: s3Endpoint, region: 'us-east-1', forcePathStyle: true,
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
      requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED',
    });
    await s3.send(new CreateBucketCommand({ Bucket: s3Bucket }));
    s3.destroy();

    const s3rverPort = await freePort();
    const s3rverLog = fs.openSync(path.join(logDir, 's3rver.log'), 'a');
    s3rver = spawn(process.execPath, [path.join(PROJECT_ROOT, 'test/support/s3rver-server.mjs'), String(s3rverPort), fs.mkdtempSync(path.join(os.tmpdir(), 'caged-s3rver-')), s3Bucket], {
      stdio: ['ignore', s3rverLog, s3rverLog],
    });
    fs.closeSync(s3rverLog);
    await waitForPort('127.0.0.1', s3rverPort, 30_000, s3rver);

    await admin.connect();
    await admin.query(`create database ${dbName}`);
    const u = new URL(ADMIN_DB_URL);
    u.pathname = `/${dbName}`;

    project.provide('temporalAddress', temporal.address);
    project.provide('s3Endpoint', s3Endpoint);
    project.provide('s3Bucket', s3Bucket);
    project.provide('s3rverEndpoint', `http://127.0.0.1:${s3rverPort}`);
    project.provide('databaseUrl', u.toString());
    project.provide('logDir', logDir);
    // Bundled once per run: bundling in every test file exhausts wasm memory (sdk-typescript #714).
    project.provide('workflowCode', await bundleWorkflows());
  } catch (err) {
    if (temporal) await temporal.stop();
    if (moto) await stopChild(moto);
    if (s3rver) await stopChild(s3rver);
    await admin.end().catch(() => {});
    throw err;
  }

  return async () => {
    // What the fault tests measured, for the run's report (test/support/figures.ts).
    const figures = path.join(logDir, 'figures.jsonl');
    if (fs.existsSync(figures)) process.stdout.write(`\nfigures measured by the fault tests (${figures}):\n${fs.readFileSync(figures, 'utf8')}`);
    await temporal?.stop();
    if (moto) await stopChild(moto);
    if (s3rver) await stopChild(s3rver);
    await admin.query(`drop database if exists ${dbName} with (force)`).catch(() => {});
    await admin.end().catch(() => {});
  };
}

