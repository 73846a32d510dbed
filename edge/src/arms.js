// Choosing the model arm: header, cookie and query conditions, and the sticky
// percentage of proxy/routing/arms.py:
//   bucket = u64_be(sha256(`${salt}:${userId}`)[0:8]) / 2^64 * 100
// Number(BigInt) rounds to the nearest double, as Python's int / 2**64 does, so both
// runtimes put a user in the same bucket.

const encoder = new TextEncoder();

export async function bucket(salt, userId) {
  const digest = await crypto.subtle.digest("SHA-256", encoder.encode(`${salt}:${userId}`));
  const u64 = new DataView(digest).getBigUint64(0, false);
  return (Number(u64) / 2 ** 64) * 100;
}

function allEqual(wanted, view, kind) {
  if (!wanted) return true;
  for (const [name, value] of Object.entries(wanted)) {
    if (view.get(kind, name) !== value) return false;
  }
  return true;
}

async function matches(experiment, view, userId) {
  if (
    !(
      allEqual(experiment.header, view, "header") &&
      allEqual(experiment.cookie, view, "cookie") &&
      allEqual(experiment.query, view, "query")
    )
  ) {
    return false;
  }
  if (experiment.percent !== null && experiment.percent !== undefined) {
    // No user, no stickiness: such a request stays on the default arm.
    return userId !== null && (await bucket(experiment.salt, userId)) < experiment.percent;
  }
  return true;
}

/** {arm, model} of the first experiment that matches, else the route's default. */
export async function chooseArm(route, view, userId) {
  for (const experiment of route.experiments) {
    if (await matches(experiment, view, userId)) {
      return { arm: experiment.arm, model: experiment.model };
    }
  }
  return route.default;
}
