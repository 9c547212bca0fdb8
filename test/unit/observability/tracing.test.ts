import { trace } from "@opentelemetry/api";
import { describe, expect, it } from "vitest";
import { httpMethodAttribute, parentContextOf } from "../../../src/observability/tracing.js";

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN = "00f067aa0ba902b7";

describe("parentContextOf (W3C traceparent)", () => {
  it("K246 takes the trace id, parent id and sampled bit of a well-formed version-00 value", () => {
    expect(trace.getSpanContext(parentContextOf(`00-${TRACE}-${SPAN}-01`))).toEqual({
      traceId: TRACE,
      spanId: SPAN,
      traceFlags: 1,
      isRemote: true,
    });
    // Flag bits other than "sampled" are undefined in version 00 and dropped.
    expect(trace.getSpanContext(parentContextOf(`00-${TRACE}-${SPAN}-ff`))?.traceFlags).toBe(1);
    expect(trace.getSpanContext(parentContextOf(`00-${TRACE}-${SPAN}-00`))?.traceFlags).toBe(0);
  });

  it("K246 ignores anything else: a new trace starts, nothing of the value is kept", () => {
    for (const value of [
      undefined,
      "",
      `ff-${TRACE}-${SPAN}-01`,
      `01-${TRACE}-${SPAN}-01`,
      `00-${TRACE}-${SPAN}-01-`,
      `00-${TRACE}-${SPAN}-01, 00-${TRACE}-${SPAN}-01`, // a repeated header joined by a proxy
      `00-${TRACE.toUpperCase()}-${SPAN}-01`,
      `00-${"0".repeat(32)}-${SPAN}-01`,
      `00-${TRACE}-${"0".repeat(16)}-01`,
      ` 00-${TRACE}-${SPAN}-0`,
      `00-${TRACE}-${SPAN}-0g`,
      `00-${TRACE}-${SPAN}\n01`,
    ]) {
      expect(trace.getSpanContext(parentContextOf(value)), String(value)).toBeUndefined();
    }
  });

  it("reports methods outside the usual set as _OTHER", () => {
    expect(httpMethodAttribute("GET")).toBe("GET");
    expect(httpMethodAttribute("BREW /secret-path")).toBe("_OTHER");
  });
});
