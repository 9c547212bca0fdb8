/**
 * An Aho–Corasick automaton over bytes: every pattern is found in ONE left-to-right pass, one
 * state step per input byte (amortised), however many patterns there are and however often they
 * match (H1). Memory is linear in the total pattern length; nothing is allocated per match.
 *
 * Matching folds bytes before comparing them (see `FOLD`), so each pattern also matches its
 * folded spellings.
 */
export interface PatternAutomaton {
  /** Length of the longest pattern; 0 when there are none. */
  readonly maxLength: number;
  /** The state after reading `byte` in `state`; the start state is 0. */
  step(state: number, byte: number): number;
  /** Length of the longest pattern ending in `state`, or 0 when none does. */
  matchLength(state: number): number;
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

const NONE = -1;

/** Builds the automaton; patterns may repeat or be prefixes of each other. Empty ones are ignored. */
export function buildPatternAutomaton(patterns: readonly Uint8Array[]): PatternAutomaton {
  let capacity = 1;
  for (const p of patterns) capacity += p.length;
  // Per node: the byte on the edge into it, its first child, its next sibling, its failure link
  // and the longest pattern ending at it (itself or through failure links).
  const edge = new Uint8Array(capacity);
  const firstChild = new Int32Array(capacity).fill(NONE);
  const nextSibling = new Int32Array(capacity).fill(NONE);
  const fail = new Int32Array(capacity);
  const out = new Int32Array(capacity);
  // The start state is dense (most bytes of an innocent body leave from it); a node with more
  // than one child also keeps its children in a map, so a step never scans a sibling list.
  const root = new Int32Array(256);
  const branches = new Map<number, number>();
  let size = 1;
  let maxLength = 0;

  const child = (node: number, byte: number): number => {
    if (node === 0) {
      const next = root[byte] as number;
      return next === 0 ? NONE : next;
    }
    const first = firstChild[node] as number;
    if (first === NONE) return NONE;
    if (nextSibling[first] === NONE) return edge[first] === byte ? first : NONE;
    return branches.get(node * 256 + byte) ?? NONE;
  };

  for (const pattern of patterns) {
    if (pattern.length === 0) continue;
    maxLength = Math.max(maxLength, pattern.length);
    let node = 0;
    for (const raw of pattern) {
      const byte = FOLD[raw] as number;
      let next = child(node, byte);
      if (next === NONE) {
        next = size++;
        edge[next] = byte;
        if (node === 0) root[byte] = next;
        else {
          const first = firstChild[node] as number;
          if (first !== NONE) {
            // Becoming (or staying) a branch: every child goes into the map.
            if (nextSibling[first] === NONE) branches.set(node * 256 + (edge[first] as number), first);
            branches.set(node * 256 + byte, next);
          }
          nextSibling[next] = first;
        }
        if (node !== 0) firstChild[node] = next;
      }
      node = next;
    }
    out[node] = Math.max(out[node] as number, pattern.length);
  }

  const step = (state: number, byte: number): number => {
    let s = state;
    for (;;) {
      const next = child(s, byte);
      if (next !== NONE) return next;
      if (s === 0) return 0;
      s = fail[s] as number;
    }
  };

  // Failure links in breadth-first order, so a node's link (always shallower) is final first.
  const queue = new Int32Array(size);
  let head = 0;
  let tail = 0;
  for (let b = 0; b < 256; b++) {
    const n = root[b] as number;
    if (n !== 0) queue[tail++] = n; // depth 1: fail to the start state (already 0)
  }
  while (head < tail) {
    const node = queue[head++] as number;
    for (let c = firstChild[node] as number; c !== NONE; c = nextSibling[c] as number) {
      const f = step(fail[node] as number, edge[c] as number);
      fail[c] = f === c ? 0 : f;
      out[c] = Math.max(out[c] as number, out[fail[c] as number] as number);
      queue[tail++] = c;
    }
  }

  return {
    maxLength,
    step: (state, byte) => step(state, FOLD[byte] as number),
    matchLength: (state) => out[state] as number,
  };
}
