"""Small fixes to the HTML that Jupyter Book 1.x writes, so pages load without console errors."""


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    # sphinx-thebe (and sphinx-togglebutton) register their inline scripts twice
    # under Jupyter Book, once with filename None and once with "": the second
    # `const THEBE_JS_URL` raises a SyntaxError in every page.
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        attributes = getattr(script, "attributes", {}) or {}
        key = (getattr(script, "filename", None) or "", tuple(sorted(attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _dedupe_scripts, priority=999)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
