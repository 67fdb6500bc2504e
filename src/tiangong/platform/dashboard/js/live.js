// Live refresh: each page polls the API while it is shown, and the header's "live" indicator
// says when data last arrived.
//
// A page gets a PageScope from the router. Everything the page starts (polls, in-flight
// requests, listeners) belongs to the scope and stops when the user navigates away, so that a
// page left behind never keeps polling or writes into the next page's DOM. Polls chain with
// setTimeout after each run completes (a slow platform gets fewer requests, never a pile-up),
// and pause while the tab is hidden.

import { ApiError } from "./api.js";
import { formatClock } from "./format.js";

/** The header indicator: ok (fresh data), stale (last poll failed), error (unreachable). */
export const liveStatus = {
  element: null,
  lastOk: null,
  failures: 0,

  attach(element) {
    this.element = element;
    this.paint();
  },

  ok() {
    this.lastOk = new Date();
    this.failures = 0;
    this.paint();
  },

  failed(error) {
    this.failures += 1;
    this.lastError = error;
    this.paint();
  },

  paint() {
    const el = this.element;
    if (!el || !el.isConnected) return;
    const text = el.querySelector(".live-text");
    let status = "idle";
    let label = "Connecting…";
    if (this.failures > 0) {
      status = this.failures > 2 ? "error" : "stale";
      label = this.lastError?.status === 0 ? "Platform unreachable" : "Refresh failed";
      if (this.lastOk) label += ` · last data ${formatClock(this.lastOk)}`;
    } else if (this.lastOk) {
      status = "ok";
      label = `Live · updated ${formatClock(this.lastOk)}`;
    }
    el.dataset.status = status;
    el.title = this.lastError && this.failures ? String(this.lastError.message) : "Data refreshes automatically";
    text.textContent = label;
  },
};

function isAbort(error) {
  return error && error.name === "AbortError";
}

/** What a page owns while it is displayed. */
export class PageScope {
  constructor() {
    this.controller = new AbortController();
    this.disposers = [];
  }

  /** Aborts this page's requests when it goes away. */
  get signal() {
    return this.controller.signal;
  }

  get active() {
    return !this.controller.signal.aborted;
  }

  onDispose(fn) {
    this.disposers.push(fn);
  }

  /** Listen to an event until the page goes away. */
  listen(target, type, handler, options) {
    target.addEventListener(type, handler, options);
    this.onDispose(() => target.removeEventListener(type, handler, options));
  }

  /**
   * Run `task(signal)` now and then every `intervalMs` after it completes. Errors other than
   * aborts go to `onError` (the first load's error is shown by the page) and the indicator.
   * Returns { now(), setInterval(ms) } so that a filter change can refresh at once.
   */
  poll(task, intervalMs, { onError } = {}) {
    let timer = null;
    let running = false;
    let again = false;
    let interval = intervalMs;
    const schedule = () => {
      clearTimeout(timer);
      if (this.active) timer = setTimeout(run, interval);
    };
    const run = async () => {
      if (!this.active) return;
      if (document.hidden) {
        schedule();
        return;
      }
      if (running) {
        again = true;
        return;
      }
      running = true;
      clearTimeout(timer);
      try {
        await task(this.signal);
        if (this.active) liveStatus.ok();
      } catch (error) {
        if (!isAbort(error) && this.active) {
          if (!(error instanceof ApiError && error.status === 401)) liveStatus.failed(error);
          if (onError) onError(error);
          else console.warn("refresh failed:", error);
        }
      } finally {
        running = false;
      }
      if (again) {
        again = false;
        run();
      } else {
        schedule();
      }
    };
    const onVisible = () => {
      if (!document.hidden) run();
    };
    this.listen(document, "visibilitychange", onVisible);
    this.onDispose(() => clearTimeout(timer));
    run();
    return {
      now: run,
      setInterval(ms) {
        interval = ms;
        schedule();
      },
    };
  }

  dispose() {
    this.controller.abort();
    for (const fn of this.disposers.splice(0)) {
      try {
        fn();
      } catch (error) {
        console.warn("page cleanup failed:", error);
      }
    }
  }
}
