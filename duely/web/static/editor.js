// The solution editor: CodeMirror 6 (vendor/codemirror.js, built by web-build/build.sh) set
// up for contest code: line numbers, highlighting for the duel's languages, bracket matching
// and closing, auto-indent, undo history, search, Tab indents (Esc then Tab leaves the editor,
// so it is no keyboard trap) and Ctrl/Cmd+Enter submits.
//
// The page's CSP (style-src 'self' plus a nonce) refuses inline styles, and CodeMirror mounts
// the styles it generates in a <style> element: that element carries the nonce the server put
// in the page's csp-nonce meta tag (duely/api/web.py), a fresh one for every page load.
// CodeMirror sets its inline styles through the CSSOM (element.style), which the policy allows.

import {
  Compartment, EditorState, EditorView, Prec, bracketMatching, classHighlighter, closeBrackets, closeBracketsKeymap, cpp,
  crosshairCursor, defaultHighlightStyle, defaultKeymap, drawSelection, dropCursor, foldGutter, foldKeymap,
  highlightActiveLine, highlightActiveLineGutter, highlightSelectionMatches, highlightSpecialChars, history, historyKeymap,
  indentOnInput, indentUnit, indentWithTab, keymap, lineNumbers, placeholder, python, rectangularSelection, searchKeymap,
  syntaxHighlighting,
} from "./vendor/codemirror.js";

// Language ids of GET /api/languages; any other id is edited as plain text.
const LANGUAGES = { python: () => python(), cpp: () => cpp() };
const CSP_NONCE = document.querySelector("meta[name=csp-nonce]")?.nonce ?? "";
const INDENT = "    ";

const theme = EditorView.theme({
  "&": { flex: "1", minHeight: "0", border: "1px solid var(--border)", borderRadius: "8px", background: "#fbfcfe",
    color: "var(--text)", fontSize: "14px", overflow: "hidden" },
  "&.cm-focused": { outline: "2px solid var(--accent)", outlineOffset: "-1px" },
  ".cm-scroller": { fontFamily: "var(--mono)", lineHeight: "1.5" },
  ".cm-content": { padding: "8px 0" },
  ".cm-gutters": { background: "#f3f5fa", borderRight: "1px solid var(--border)", color: "var(--muted)" },
  ".cm-activeLine": { background: "#eef2fb80" },
  ".cm-activeLineGutter": { background: "#e6ebf7" },
});

export class CodeEditor {
  /**
   * @param {{doc: string, language: string, label: string, placeholder: string,
   *          onChange: () => void, onSubmit: () => void, testid?: string}} options
   */
  constructor({ doc, language, label, placeholder: hint, onChange, onSubmit, testid }) {
    this.languageSlot = new Compartment();
    this.view = new EditorView({
      state: EditorState.create({
        doc,
        extensions: [
          // Before the default keymap, which binds Mod-Enter to "insert blank line".
          Prec.highest(keymap.of([{ key: "Mod-Enter", run: () => { onSubmit(); return true; }, preventDefault: true }])),
          lineNumbers(), highlightActiveLineGutter(), highlightSpecialChars(), history(), foldGutter(),
          drawSelection(), dropCursor(), EditorState.allowMultipleSelections.of(true), indentOnInput(),
          syntaxHighlighting(defaultHighlightStyle),
          syntaxHighlighting(classHighlighter),    // stable class names too (tok-keyword, ...)
          bracketMatching(), closeBrackets(), rectangularSelection(), crosshairCursor(), highlightActiveLine(),
          highlightSelectionMatches(),
          keymap.of([...closeBracketsKeymap, ...defaultKeymap, ...searchKeymap, ...historyKeymap, ...foldKeymap, indentWithTab]),
          indentUnit.of(INDENT), EditorState.tabSize.of(INDENT.length),
          placeholder(hint),
          EditorView.contentAttributes.of({ "aria-label": label }),
          EditorView.editorAttributes.of(testid ? { "data-testid": testid } : {}),
          EditorView.updateListener.of((update) => { if (update.docChanged) onChange(); }),
          theme,
          EditorView.cspNonce.of(CSP_NONCE),
          this.languageSlot.of(languageSupport(language)),
        ],
      }),
    });
  }

  /** The element to put in the page (CodeMirror's .cm-editor). */
  get dom() {
    return this.view.dom;
  }

  get value() {
    return this.view.state.doc.toString();
  }

  setLanguage(id) {
    this.view.dispatch({ effects: this.languageSlot.reconfigure(languageSupport(id)) });
  }

  focus() {
    this.view.focus();
  }

  destroy() {
    this.view.destroy();
  }
}

function languageSupport(id) {
  return LANGUAGES[id]?.() ?? [];
}
