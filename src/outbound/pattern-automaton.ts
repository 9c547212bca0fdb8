import { setImmediate as yieldToEventLoop } from "node:timers/promises";

/**
 * An Aho–Corasick automaton over bytes: every pattern is found in ONE left-to-right pass, one
 * state step per input byte (amortised), however many patterns there are and however often they
 * match (H1). Nothing is allocated per step or per match.
 *
 * The automaton is a few flat typed arrays, read directly by the scrubber's inner loop (see
 * `stepAutomaton`); no per-node objects or maps, so building it is one linear pass over the
 * pattern bytes plus one breadth-first pass for the failure links. Long random patterns make a
 * trie that is almost all chains: a node keeps its one child inline (`next`), and only the few
 * nodes where patterns diverge (at most one per pattern, plus the start state) get a dense row
 * of 256 children. Memory is 11 bytes per node (at most one per pattern byte) plus 1 KiB per
 * branching node; a dense transition table would need states x alphabet words (hundreds of MiB
 * for the largest secret).
 *
 * Matching folds bytes before comparing them (see `FOLD`), so each pattern also matches its
 * folded spellings.
 */
export interface PatternAutomaton {
  /** Length of the longest pattern; 0 when there are none. */
  readonly maxLength: number;
  /** Per node: the folded byte on the edge into it. */
  readonly edge: Uint8Array;
  /** Per node: its only child (> 0), no child (0), or its dense row `-next - 1` (< 0). */
  readonly next: Int32Array;
  /** Dense rows of 256 children (0 = none); row 0 belongs to the start state. */
  readonly rows: Int32Array;
  /** Per node: its failure link (the longest proper suffix that is also a trie node). */
  readonly fail: Int32Array;
  /** Per node: length of the longest pattern ending there (itself or through failure links). */
  readonly out: Uint16Array | Int32Array;
}

/**
 * ASCII letters match in either case: hex digits, percent-escapes, `\uXXXX` and `&#xNN;` are
 * case-insensitive by definition, and an upstream that upper-cases a key still echoes it. The two
 * base64 alphabets are one (`-` is `+`, `_` is `/`), which halves the base64 patterns. For a
 * pattern of at least 8 bytes an innocent folded collision is as unlikely as an exact one.
 */
export const FOLD: Uint8Array = (() => {
  const fold = new Uint8Array(256);
  for (let b = 0; b < 256; b++) fold[b] = b;
  for (let b = 0x41; b <= 0x5a; b++) fold[b] = b + 0x20;
  fold[0x2d] = 0x2b; // "-" is "+"
  fold[0x5f] = 0x2f; // "_" is "/"
  return fold;
})();

/** Nodes built between two turns of the event loop by `buildPatternAutomatonInSlices`. */
// A cold (not yet optimised) build runs at ~200 ns a node on a busy core: ~6 ms a slice.
export const BUILD_SLICE_NODES = 32 * 1024;

/** The child of `node` along the FOLDED byte `byte`, or 0 when there is none. */
export function childOf(a: PatternAutomaton, node: number, byte: number): number {
  const n = a.next[node] as number;
  if (n > 0) return a.edge[n] === byte ? n : 0;
  if (n < 0) return a.rows[(-n - 1) * 256 + byte] as number;
  return 0;
}

/** The state after reading the FOLDED byte `byte` in `state`; the start state is 0. */
export function stepAutomaton(a: PatternAutomaton, state: number, byte: number): number {
  let s = state;
  for (;;) {
    const c = childOf(a, s, byte);
    if (c !== 0 || s === 0) return c;
    s = a.fail[s] as number;
  }
}

/** Builds the automaton in one go; patterns may repeat or be prefixes of each other. Empty ones are ignored. */
export function buildPatternAutomaton(patterns: readonly Uint8Array[]): PatternAutomaton {
  const build = buildInSteps(patterns);
  for (;;) {
    const step = build.next();
    if (step.done === true) return step.value;
  }
}

/**
 * Builds the automaton BUILD_SLICE_NODES nodes at a time, letting the event loop run in between
 * (H1): the largest secret makes a few hundred thousand nodes, too many to build while every
 * other caller waits.
 */
export async function buildPatternAutomatonInSlices(
  patterns: readonly Uint8Array[],
): Promise<PatternAutomaton> {
  const build = buildInSteps(patterns);
  for (;;) {
    const step = build.next();
    if (step.done === true) return step.value;
    await yieldToEventLoop();
  }
}

/** The build, pausing (yield) after about every BUILD_SLICE_NODES nodes of work. */
function* buildInSteps(patterns: readonly Uint8Array[]): Generator<void, PatternAutomaton, undefined> {
  let capacity = 1;
  let branchable = 1; // the start state, plus at most one new branching node per pattern
  for (const p of patterns) {
    capacity += p.length;
    if (p.length > 0) branchable++;
  }
  const maxLength = patterns.reduce((max, p) => Math.max(max, p.length), 0);
  const a: PatternAutomaton = {
    maxLength,
    edge: new Uint8Array(capacity),
    next: new Int32Array(capacity),
    rows: new Int32Array(branchable * 256),
    fail: new Int32Array(capacity),
    // Match lengths fit 16 bits for every secret the broker accepts (8 KiB, 16 KiB as hex).
    out: maxLength <= 0xffff ? new Uint16Array(capacity) : new Int32Array(capacity),
  };
  const { edge, next, rows, out } = a;
  next[0] = -1; // the start state is dense: most bytes of an innocent body leave from it
  let rowCount = 1;
  let size = 1;
  let budget = BUILD_SLICE_NODES;

  for (const pattern of patterns) {
    if (pattern.length === 0) continue;
    let node = 0;
    for (let i = 0; i < pattern.length; i++) {
      const byte = FOLD[pattern[i] as number] as number;
      let c = childOf(a, node, byte);
      if (c === 0) {
        c = size++;
        edge[c] = byte;
        const n = next[node] as number;
        if (n === 0) next[node] = c;
        else if (n < 0) rows[(-n - 1) * 256 + byte] = c;
        else {
          // A second child: the node becomes a branching node with a dense row. Only the first
          // byte where this pattern leaves the trie can do this, so one row per pattern suffices.
          const row = rowCount++;
          rows[row * 256 + (edge[n] as number)] = n;
          rows[row * 256 + byte] = c;
          next[node] = -row - 1;
        }
      }
      node = c;
    }
    out[node] = Math.max(out[node] as number, pattern.length);
    budget -= pattern.length;
    if (budget <= 0) {
      budget = BUILD_SLICE_NODES;
      yield;
    }
  }

  // Failure links level by level: a node's link is shallower, so it is final before it is needed.
  // Every node lies on some pattern's path, so walking all patterns one byte deeper at a time
  // visits every node in breadth-first order without a queue (a node on several patterns' paths
  // is visited once per pattern; setting its link again gives the same link).
  const cursors = new Int32Array(patterns.length); // each pattern's node at the current depth
  for (let depth = 0; depth < maxLength; depth++) {
    for (let p = 0; p < patterns.length; p++) {
      const pattern = patterns[p] as Uint8Array;
      if (pattern.length <= depth) continue;
      const parent = cursors[p] as number;
      const child = childOf(a, parent, FOLD[pattern[depth] as number] as number);
      cursors[p] = child;
      if (parent !== 0) setFailure(a, parent, child); // depth 1 fails to the start state (0)
      budget--;
    }
    if (budget <= 0) {
      budget = BUILD_SLICE_NODES;
      yield;
    }
  }
  return a;
}

/** Sets the failure link of `child` of `parent` (not the start state) and inherits its output. */
function setFailure(a: PatternAutomaton, parent: number, child: number): void {
  const byte = a.edge[child] as number;
  let f = a.fail[parent] as number;
  let target: number;
  for (;;) {
    target = childOf(a, f, byte);
    if (target !== 0 || f === 0) break;
    f = a.fail[f] as number;
  }
  a.fail[child] = target;
  a.out[child] = Math.max(a.out[child] as number, a.out[target] as number);
}
