import { describe, expect, it } from 'vitest';
import { ApplicationFailure } from '@temporalio/activity';
import { isCatalogUnavailable } from '../src/catalog/unavailable.js';
import { unavailableDependency } from '../src/api/errors.js';
import { toFailure } from '../src/activities/failures.js';
import { CagedError } from '../src/shared/errors.js';

const withCode = (message: string, code: string) => Object.assign(new Error(message), { code });

describe('catalog connection errors are told apart from query errors', () => {
  it.each([
    ['refused', withCode('connect ECONNREFUSED 127.0.0.1:5432', 'ECONNREFUSED')],
    ['refused on every address', Object.assign(new AggregateError([withCode('x', 'ECONNREFUSED')], ''), { code: undefined })],
    ['reset', withCode('read ECONNRESET', 'ECONNRESET')],
    ['admin_shutdown', withCode('terminating connection due to administrator command', '57P01')],
    ['cannot_connect_now', withCode('the database system is starting up', '57P03')],
    ['class 08', withCode('connection failure', '08006')],
    ['terminated', new Error('Connection terminated unexpectedly')],
    ['connect timeout', new Error('timeout exceeded when trying to connect')],
    ['broken client', new Error('Client has encountered a connection error and is not queryable')],
  ])('%s → unavailable', (_name, err) => {
    expect(isCatalogUnavailable(err)).toBe(true);
    expect(unavailableDependency(err)).toBe('catalog');
    const f = toFailure(err) as ApplicationFailure;
    expect(f).toBeInstanceOf(ApplicationFailure);
    expect(f.type).toBe('unavailable');
    expect(f.nonRetryable).toBe(false);
  });

  it.each([
    ['unique violation', withCode('duplicate key value violates unique constraint', '23505')],
    ['syntax', withCode('syntax error at or near "selec"', '42601')],
    ['plain', new Error('boom')],
  ])('%s → not unavailable', (_name, err) => {
    expect(isCatalogUnavailable(err)).toBe(false);
    expect(unavailableDependency(err)).toBeUndefined();
    expect(toFailure(err)).toBe(err);
  });

  it('a CagedError keeps its own code', () => {
    const f = toFailure(new CagedError('not_found', 'no such snapshot')) as ApplicationFailure;
    expect(f.type).toBe('not_found');
    expect(f.nonRetryable).toBe(true);
  });

  it('Temporal unreachable (gRPC UNAVAILABLE inside a ServiceError) → workflow service unavailable', () => {
    const grpc = Object.assign(new Error('14 UNAVAILABLE: No connection established'), { code: 14, details: 'No connection established' });
    const service = Object.assign(new Error('Failed to signalWithStart'), { cause: grpc });
    expect(unavailableDependency(service)).toBe('workflow service');
    expect(unavailableDependency(Object.assign(new Error('x'), { code: 3, details: 'bad' }))).toBeUndefined();
  });
});
