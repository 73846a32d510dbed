// A reason not to re-rank: the origin's bytes are served with
// `X-Rerank: skipped; reason=REASON[; plugin=NAME]`, as the proxy does.

export class Skip extends Error {
  constructor(reason, plugin = null) {
    super(reason);
    this.reason = reason;
    this.plugin = plugin;
  }
}
