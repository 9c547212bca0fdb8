import type { Logger } from "../log/logger.js";

/** Releases one resource: closes a pool, drains a server, zeroes a key. */
export type Teardown = () => void | Promise<void>;

/**
 * The resources a process built, in the order it built them. Each one registers its
 * teardown the moment it exists (unkey's svc/vault runner: `r.DeferCtx(server.Shutdown)`),
 * so nothing can be forgotten by a later edit of a hand-written stop().
 */
export interface Lifecycle {
  /** Registers the teardown of a resource just created; `name` identifies it in logs. */
  defer(name: string, teardown: Teardown): void;
  /**
   * Runs every teardown once, newest first, each after the previous one settled. A teardown
   * that fails is logged and the others still run: a stuck pool must not keep a KMS client,
   * or key material, alive. Calling it again returns the same promise.
   */
  stop(): Promise<void>;
}

export function createLifecycle(deps: { logger: Logger }): Lifecycle {
  const { logger } = deps;
  const teardowns: Array<{ name: string; teardown: Teardown }> = [];
  let stopped: Promise<void> | undefined;

  async function runAll(): Promise<void> {
    // Reverse order: a resource is released before the ones it was built on.
    for (let i = teardowns.length - 1; i >= 0; i--) {
      const entry = teardowns[i];
      if (entry === undefined) continue;
      try {
        await entry.teardown();
      } catch (err) {
        logger.error({ err, resource: entry.name }, "teardown failed");
      }
    }
    teardowns.length = 0;
  }

  return {
    defer(name, teardown) {
      // Registering after stop would leak the resource silently: refuse loudly instead.
      if (stopped !== undefined) throw new Error(`cannot register ${name}: the lifecycle has stopped`);
      teardowns.push({ name, teardown });
    },
    stop() {
      stopped ??= runAll();
      return stopped;
    },
  };
}

/**
 * Runs a build step; if it throws, everything registered so far is torn down (newest first)
 * before the error goes on, so a failed start leaves no open pool, socket or KMS client.
 */
export async function unwindOnFailure<T>(lifecycle: Lifecycle, build: () => Promise<T>): Promise<T> {
  try {
    return await build();
  } catch (err) {
    await lifecycle.stop();
    throw err;
  }
}
