// Reading and writing the widget's traits (the anywidget model), the one way every module does it.

/** A trait's value, or `fallback` while it is unset. */
export function readTrait(model, name, fallback) {
  const value = model.get(name);
  return value === undefined || value === null ? fallback : value;
}

/** Sets traits and sends them to the kernel as one update, so it never sees one without the others. */
export function writeTraits(model, changes) {
  for (const [name, value] of Object.entries(changes)) model.set(name, value);
  model.save_changes();
}
