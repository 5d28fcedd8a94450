// What the page takes from CodeMirror 6: exactly these names, bundled by build.mjs into
// duely/web/static/vendor/codemirror.js. The page composes them in duely/web/static/editor.js.
// To use another CodeMirror name in the page, export it here and run ./build.sh.

export { Compartment, EditorState, Prec } from "@codemirror/state";
export {
  EditorView, crosshairCursor, drawSelection, dropCursor, highlightActiveLine, highlightActiveLineGutter,
  highlightSpecialChars, keymap, lineNumbers, placeholder, rectangularSelection,
} from "@codemirror/view";
export { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
export {
  bracketMatching, defaultHighlightStyle, foldGutter, foldKeymap, indentOnInput, indentUnit, syntaxHighlighting,
} from "@codemirror/language";
export { closeBrackets, closeBracketsKeymap } from "@codemirror/autocomplete";
export { highlightSelectionMatches, searchKeymap } from "@codemirror/search";
export { classHighlighter } from "@lezer/highlight";
export { python } from "@codemirror/lang-python";
export { cpp } from "@codemirror/lang-cpp";
