import { z } from "zod";
import { OPERATION_CLASSES } from "../policy/operation-class.js";

// A provider's rate limits (issue 13 item 6), declared beside its definition in the registry.
// Enforced by proxy/call-rate-limiter.ts across every replica.

const count = z.int().min(1).max(10_000_000);

/** Calls allowed per fixed window; both windows apply when both are given. */
export const rateSchema = z
  .strictObject({ perMinute: z.optional(count), perHour: z.optional(count) })
  .refine((r) => r.perMinute !== undefined || r.perHour !== undefined, "name perMinute and/or perHour");

const scopedRatesSchema = z.strictObject({
  /** Per secret (a secret belongs to one user, so this is per user and secret). */
  perSecret: z.optional(rateSchema),
  /** Per caller key, over every secret of this provider it uses. */
  perCallerKey: z.optional(rateSchema),
});

export const rateLimitsSchema = z.strictObject({
  ...scopedRatesSchema.shape,
  /**
   * Extra limits for one operation class (e.g. `transfer`), checked on top of the provider-wide
   * ones above. Only the classes the broker knows (policy/operation-class.ts).
   */
  classes: z.optional(z.partialRecord(z.enum(OPERATION_CLASSES), scopedRatesSchema)),
});

/** A limit: calls per minute and/or per hour. */
export type Rate = z.infer<typeof rateSchema>;
/** The limits per secret and per caller key at one level (provider-wide or one class). */
export type ScopedRates = z.infer<typeof scopedRatesSchema>;
/** A provider's `rateLimits` block. */
export type RateLimitsDefinition = z.infer<typeof rateLimitsSchema>;
