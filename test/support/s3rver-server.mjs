// The second S3-protocol server of the test run: s3rver (npm), a Node implementation whose
// quirks differ from moto's (ListMultipartUploads answers 501 NotImplemented). Run as a child
// process: node s3rver-server.mjs <port> <directory> <bucket>.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const S3rver = require('s3rver');
const { DUMMY_ACCOUNT } = require('s3rver/lib/models/account');

const [port, directory, bucket] = process.argv.slice(2);
// The tests sign with test/test, as they do for moto.
DUMMY_ACCOUNT.createKeyPair('test', 'test');
const server = new S3rver({ address: '127.0.0.1', port: Number(port), directory, silent: true, configureBuckets: [{ name: bucket }] });
await server.run();
process.stdout.write('ready\n');
const stop = () => server.close().finally(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
