export declare function utimesSeconds(ns: bigint | string): number | string;
