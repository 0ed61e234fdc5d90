// anywidget entry point: `render({model, el})` builds one view and returns its cleanup.
import { SemdrawView } from "./view.js";

function render({ model, el }) {
  const view = new SemdrawView(model, el);
  return () => view.destroy();
}

export default { render };
