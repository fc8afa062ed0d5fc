// The parts of a configuration: a value by its dotted path, and what changed between two.

/** A configuration value as JSON gives it. */
export type Value = null | boolean | number | string | Value[] | { [key: string]: Value };

/**
 * The part of `value` at `path`: keys joined by dots, array items by index (`database.pool`,
 * `hosts.0`); all of it for `""`. `undefined` when nothing is there.
 */
export function at(value: Value | undefined, path: string): Value | undefined {
  if (path === "") {
    return value;
  }
  let here: Value | undefined = value;
  for (const key of path.split(".")) {
    if (Array.isArray(here)) {
      here = /^\d+$/.test(key) ? here[Number(key)] : undefined;
    } else if (here !== null && typeof here === "object") {
      here = Object.prototype.hasOwnProperty.call(here, key) ? here[key] : undefined;
    } else {
      return undefined;
    }
  }
  return here;
}

/** Whether two JSON values are the same. */
export function same(a: Value | undefined, b: Value | undefined): boolean {
  if (a === b) {
    return true;
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((item, i) => same(item, b[i]));
  }
  if (isObject(a) && isObject(b)) {
    const keys = Object.keys(a);
    return keys.length === Object.keys(b).length && keys.every((k) => k in b && same(a[k], b[k]));
  }
  return false;
}

function isObject(value: Value | undefined): value is { [key: string]: Value } {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** One changed leaf or subtree: where, and its value before and after (`null`: absent). */
export interface Difference {
  path: string;
  oldValue: Value;
  newValue: Value;
}

/**
 * What changed from `before` to `after`, as the agent tells it: two objects compared key by key
 * (keys in order), anything else as a whole.
 */
export function differences(before: Value | undefined, after: Value | undefined, path = ""): Difference[] {
  if (same(before, after)) {
    return [];
  }
  if (isObject(before) && isObject(after)) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
    return keys.flatMap((key) => {
      const here = path === "" ? key : `${path}.${key}`;
      if (key in before && key in after) {
        return differences(before[key], after[key], here);
      }
      return [{ path: here, oldValue: before[key] ?? null, newValue: after[key] ?? null }];
    });
  }
  return [{ path, oldValue: before ?? null, newValue: after ?? null }];
}
