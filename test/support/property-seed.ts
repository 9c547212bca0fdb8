import fc from "fast-check";

/**
 * Every property test runs from one fixed seed, so a failure seen once is seen again on every run
 * and every machine (catalogue W2: an unseeded property test failed in a quarter of runs). To
 * explore new input, run with FC_SEED=<integer>; a failure prints the seed and path to replay it.
 */
const seed = Number.parseInt(process.env.FC_SEED ?? "20261203", 10);
if (!Number.isSafeInteger(seed)) throw new Error("FC_SEED must be an integer");
fc.configureGlobal({ seed });
