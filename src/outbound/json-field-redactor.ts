import { BrokerError } from "../errors.js";
import type { FieldRedactor } from "./redactor.js";

/** What a redacted JSON value becomes: a string, whatever the value's type was. */
export const REDACTED_JSON = Buffer.from('"[redacted]"', "latin1");

// The JSON nesting a redactor follows; deeper answers are refused rather than guessed at.
const MAX_DEPTH = 512;

// Scanner states.
const VALUE = 0; // a value is expected
const ARRAY_FIRST = 1; // after "[": a value or "]"
const KEY_OR_END = 2; // after "{": a key or "}"
const KEY = 3; // after "," in an object: a key
const COLON = 4;
const AFTER_VALUE = 5; // "," or a closing bracket
const STRING = 6;
const ESCAPE = 7;
const UNICODE = 8;
const NUMBER = 9;
const LITERAL = 10;
const END = 11; // the top-level value is complete: whitespace only

// Number sub-states (RFC 8259 grammar); the ones marked final may end the number.
const N_MINUS = 0;
const N_ZERO = 1; // final
const N_INT = 2; // final
const N_DOT = 3;
const N_FRAC = 4; // final
const N_EXP = 5;
const N_EXP_SIGN = 6;
const N_EXP_DIGITS = 7; // final

const OBJECT = 1;
const ARRAY = 2;

const LITERALS = [Buffer.from("true"), Buffer.from("false"), Buffer.from("null")];

const isWhitespace = (b: number): boolean => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
const isDigit = (b: number): boolean => b >= 0x30 && b <= 0x39;
const hexValue = (b: number): number => {
  if (b >= 0x30 && b <= 0x39) return b - 0x30;
  if (b >= 0x61 && b <= 0x66) return b - 0x57;
  if (b >= 0x41 && b <= 0x46) return b - 0x37;
  return -1;
};

function notJson(): BrokerError {
  return new BrokerError("unavailable", "upstream answer cannot be redacted: it is not valid JSON");
}

/**
 * Replaces the value of every object member whose key is one of `fields` (ASCII case-insensitive,
 * after JSON escapes are undone, at any depth, every occurrence) by `"[redacted]"`, a chunk at a
 * time. The scanner is a strict RFC 8259 validator: it emits only bytes it has accepted, so what
 * left is always a prefix of valid JSON, and the first byte that is not JSON stops the body with
 * `unavailable` (a lenient client could otherwise read a member we did not see). Memory is
 * bounded: the nesting stack and the key being read (at most the longest field name).
 */
export function createJsonFieldRedactor(fields: ReadonlySet<string>): FieldRedactor {
  let maxKey = 0;
  for (const f of fields) maxKey = Math.max(maxKey, f.length);

  let state = VALUE;
  let sawValue = false;
  const stack = new Uint8Array(MAX_DEPTH);
  let depth = 0;
  let inKey = false;
  let unicodeDigits = 0;
  let unicodeValue = 0;
  let numberState = N_MINUS;
  let literal: Buffer = LITERALS[0] as Buffer;
  let literalAt = 0;
  // The key being read, lower-cased; `keyMiss` once it can no longer name a field.
  let key = "";
  let keyMiss = false;
  let redactNext = false;
  let skipping = false;
  let skipDepth = 0;
  let redactions = 0;

  const keyChar = (code: number): void => {
    if (keyMiss) return;
    if (code >= 0x80 || key.length >= maxKey) {
      keyMiss = true;
      return;
    }
    key += String.fromCharCode(code >= 0x41 && code <= 0x5a ? code + 0x20 : code);
  };

  return {
    get redactions() {
      return redactions;
    },
    push(chunk) {
      const parts: Buffer[] = [];
      let runStart = 0;
      // Starts a value at byte i: a value after a matching key is replaced, not emitted.
      const startValue = (i: number): void => {
        sawValue = true;
        if (redactNext && !skipping) {
          if (i > runStart) parts.push(chunk.subarray(runStart, i));
          parts.push(REDACTED_JSON);
          redactions += 1;
          skipping = true;
          skipDepth = depth;
        }
        redactNext = false;
      };
      // A value ended before byte `next`; the redacted one resumes output there.
      const valueDone = (next: number): void => {
        state = depth === 0 ? END : AFTER_VALUE;
        if (skipping && depth === skipDepth) {
          skipping = false;
          runStart = next;
        }
      };
      const open = (kind: number): void => {
        if (depth >= MAX_DEPTH) throw notJson();
        stack[depth] = kind;
        depth += 1;
      };

      for (let i = 0; i < chunk.length; i++) {
        const b = chunk[i] as number;
        switch (state) {
          case STRING:
            if (b === 0x22) {
              if (inKey) {
                redactNext = !keyMiss && fields.has(key);
                state = COLON;
              } else {
                valueDone(i + 1);
              }
            } else if (b === 0x5c) {
              state = ESCAPE;
            } else if (b < 0x20) {
              throw notJson();
            } else if (inKey) {
              keyChar(b);
            }
            break;
          case ESCAPE: {
            const decoded =
              b === 0x22 || b === 0x5c || b === 0x2f
                ? b
                : b === 0x62
                  ? 0x08
                  : b === 0x66
                    ? 0x0c
                    : b === 0x6e
                      ? 0x0a
                      : b === 0x72
                        ? 0x0d
                        : b === 0x74
                          ? 0x09
                          : -1;
            if (b === 0x75) {
              state = UNICODE;
              unicodeDigits = 0;
              unicodeValue = 0;
            } else if (decoded < 0) {
              throw notJson();
            } else {
              if (inKey) keyChar(decoded);
              state = STRING;
            }
            break;
          }
          case UNICODE: {
            const h = hexValue(b);
            if (h < 0) throw notJson();
            unicodeValue = unicodeValue * 16 + h;
            unicodeDigits += 1;
            if (unicodeDigits === 4) {
              if (inKey) keyChar(unicodeValue);
              state = STRING;
            }
            break;
          }
          case NUMBER: {
            if (isDigit(b)) {
              if (numberState === N_MINUS) numberState = b === 0x30 ? N_ZERO : N_INT;
              else if (numberState === N_ZERO) throw notJson();
              else if (numberState === N_DOT) numberState = N_FRAC;
              else if (numberState === N_EXP || numberState === N_EXP_SIGN) numberState = N_EXP_DIGITS;
              break;
            }
            if (b === 0x2e && (numberState === N_ZERO || numberState === N_INT)) {
              numberState = N_DOT;
              break;
            }
            if (
              (b === 0x65 || b === 0x45) &&
              (numberState === N_ZERO || numberState === N_INT || numberState === N_FRAC)
            ) {
              numberState = N_EXP;
              break;
            }
            if ((b === 0x2b || b === 0x2d) && numberState === N_EXP) {
              numberState = N_EXP_SIGN;
              break;
            }
            if (
              numberState !== N_ZERO &&
              numberState !== N_INT &&
              numberState !== N_FRAC &&
              numberState !== N_EXP_DIGITS
            ) {
              throw notJson();
            }
            // The number ended before this byte, which belongs to what follows.
            valueDone(i);
            i -= 1;
            break;
          }
          case LITERAL:
            if (b !== literal[literalAt]) throw notJson();
            literalAt += 1;
            if (literalAt === literal.length) valueDone(i + 1);
            break;
          case ARRAY_FIRST:
            if (isWhitespace(b)) break;
            if (b === 0x5d) {
              depth -= 1;
              valueDone(i + 1);
              break;
            }
            state = VALUE;
            i -= 1;
            break;
          case VALUE:
            if (isWhitespace(b)) break;
            startValue(i);
            if (b === 0x7b) {
              open(OBJECT);
              state = KEY_OR_END;
            } else if (b === 0x5b) {
              open(ARRAY);
              state = ARRAY_FIRST;
            } else if (b === 0x22) {
              inKey = false;
              state = STRING;
            } else if (b === 0x2d || isDigit(b)) {
              numberState = b === 0x2d ? N_MINUS : b === 0x30 ? N_ZERO : N_INT;
              state = NUMBER;
            } else if (b === 0x74 || b === 0x66 || b === 0x6e) {
              literal = LITERALS[b === 0x74 ? 0 : b === 0x66 ? 1 : 2] as Buffer;
              literalAt = 1;
              state = LITERAL;
            } else {
              throw notJson();
            }
            break;
          case KEY_OR_END:
          case KEY:
            if (isWhitespace(b)) break;
            if (b === 0x22) {
              inKey = true;
              key = "";
              keyMiss = false;
              state = STRING;
            } else if (b === 0x7d && state === KEY_OR_END) {
              depth -= 1;
              valueDone(i + 1);
            } else {
              throw notJson();
            }
            break;
          case COLON:
            if (isWhitespace(b)) break;
            if (b !== 0x3a) throw notJson();
            state = VALUE;
            break;
          case AFTER_VALUE: {
            if (isWhitespace(b)) break;
            const top = stack[depth - 1];
            if (b === 0x2c) {
              state = top === OBJECT ? KEY : VALUE;
            } else if ((b === 0x7d && top === OBJECT) || (b === 0x5d && top === ARRAY)) {
              depth -= 1;
              valueDone(i + 1);
            } else {
              throw notJson();
            }
            break;
          }
          case END:
            if (!isWhitespace(b)) throw notJson();
            break;
        }
      }
      if (!skipping && runStart < chunk.length) {
        parts.push(runStart === 0 ? chunk : chunk.subarray(runStart));
      }
      return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
    },
    flush() {
      if (state === NUMBER && depth === 0) {
        // A bare top-level number ends with the body.
        if (
          numberState === N_ZERO ||
          numberState === N_INT ||
          numberState === N_FRAC ||
          numberState === N_EXP_DIGITS
        ) {
          return Buffer.alloc(0);
        }
        throw notJson();
      }
      // An empty (or all-whitespace) body has nothing to redact; anything unfinished is refused.
      if (state === END || (state === VALUE && depth === 0 && !sawValue)) return Buffer.alloc(0);
      throw notJson();
    },
  };
}
