/** The type id of int8 (bigint), for both drivers' parsers. */
export const INT8_OID = 20;
// Counters are bigint in SQL but stay far below 2^53; both drivers must agree on numbers.
export const parseInt8 = (value: string): number => Number.parseInt(value, 10);
