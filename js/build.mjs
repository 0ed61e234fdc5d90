// Bundles the widget into the Python package's static/ folder, where the widget loads it from (semdraw_widget/widget.py).
import { build } from "esbuild";

const outdir = new URL("../semdraw_widget/static/", import.meta.url).pathname;
const common = { bundle: true, minify: true, target: "es2020", logLevel: "info" };

await Promise.all([
  build({ ...common, entryPoints: ["src/index.js"], outfile: `${outdir}widget.js`, format: "esm" }),
  build({ ...common, entryPoints: ["src/widget.css"], outfile: `${outdir}widget.css` }),
]);
