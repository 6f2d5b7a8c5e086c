"""Small fixes to the HTML that Jupyter Book 1.x writes, so pages load without console errors.

Also numbers the glued pandas tables as tables: ``{glue:figure}`` always makes a
figure node, so Sphinx would caption a table shown with it "Fig. N", count it among
the figures and make ``{numref}`` say "Fig. N". Every such table is named
``tab-...``; those figure nodes become :class:`TableFigure` nodes, an enumerable
node of Sphinx's "table" type, so they read "Table N" (``numfig_format['table']``)
in the caption and in every ``{numref}``, counted apart from the figures.

And makes every chapter notebook depend on ex3lib's source, so that an edit to
the library makes an incremental build execute the chapters again; and names
the chapter being executed in ``EX3_CHAPTER``, which starts the progress lines
``ex3lib.run_many`` writes on the build's terminal.

And serves the explorers of the static pages (:mod:`ex3lib.pages`): copies
``plotly.min.js`` from the installed ``plotly`` wheel into the site's
``_static`` folder and loads it (deferred) on the pages that hold an explorer,
and only there.

And reads (so executes) the chapters in the book's reading order, the order of
``_toc.yml``, instead of Sphinx's alphabetical one: each chapter then trains its
own runs, and the conclusion finds the earlier chapters' runs in the results
store instead of training the protocol chapter's inside one of its cells. The
tests (``book/conftest.py``) run the chapters in the same order.
"""

import os
import shutil
from pathlib import Path

from docutils import nodes
from sphinx.locale import _
from sphinx.util.nodes import clean_astext

TABLE_PREFIX = "tab-"


class TableFigure(nodes.figure):
    """A figure (e.g. from ``glue:figure``) that holds a table and is numbered as one."""


def _table_title(node):
    # Title used by {ref} and to decide whether the node is numbered at all
    # (Sphinx numbers only captioned enumerable nodes), as for figures.
    for child in node:
        if isinstance(child, nodes.caption):
            return clean_astext(child)
    return None


def _is_table_figure(node):
    labels = list(node.get("ids", ())) + list(node.get("names", ()))
    return any(label.startswith(TABLE_PREFIX) for label in labels)


def _retype_table_figures(app, doctree):
    # doctree-read runs before the doctree is pickled and before env-get-updated,
    # where Sphinx assigns the figure/table numbers (TocTreeCollector), and numref
    # looks the target node up again in the pickled doctree, so both see TableFigure.
    for figure in list(doctree.findall(nodes.figure)):
        if type(figure) is not nodes.figure or not _is_table_figure(figure):
            continue
        table = TableFigure(figure.rawsource)
        table.source, table.line = figure.source, figure.line
        for key, value in figure.attributes.items():
            table[key] = list(value) if isinstance(value, list) else value
        children = list(figure.children)
        figure.clear()
        table.extend(children)
        figure.replace_self(table)
        # document.ids must point at the node in the tree: the std domain resolves
        # {numref} through env.get_doctree(docname).ids[labelid].
        for node_id in table["ids"]:
            if doctree.ids.get(node_id) is figure:
                doctree.ids[node_id] = table


def _visit_html(self, node):
    # The HTML is a figure's; the caption's "Table N" comes from add_fignumber,
    # which asks the std domain for the node's enumerable type ("table").
    if not hasattr(self, "_ex3_table_starts"):
        self._ex3_table_starts = []
    self._ex3_table_starts.append(len(self.body))
    self.visit_figure(node)


def _depart_html(self, node):
    # The caption's permalink says "Link to this image" for any figure: say table.
    start = self._ex3_table_starts.pop()
    if node["ids"]:
        old = f'href="#{node["ids"][0]}" title="{_("Link to this image")}"'
        new = f'href="#{node["ids"][0]}" title="{_("Link to this table")}"'
        for index in range(start, len(self.body)):
            if old in self.body[index]:
                self.body[index] = self.body[index].replace(old, new)
    self.depart_figure(node)


def _visit_latex(self, node):
    # A float "table" environment instead of "figure", so LaTeX captions and counts
    # it as a table too; the other cases (minipage, wrapfigure, in a table) stay.
    self.visit_figure(node)
    if self.context and self.context[-1] == r"\end{figure}" + "\n":
        for index in range(len(self.body) - 1, -1, -1):
            if self.body[index].startswith("\n" + r"\begin{figure}"):
                self.body[index] = self.body[index].replace(r"\begin{figure}", r"\begin{table}", 1)
                self.context[-1] = r"\end{table}" + "\n"
                break


def _depart_latex(self, node):
    self.depart_figure(node)


def _visit_other(self, node):
    self.visit_figure(node)


def _depart_other(self, node):
    self.depart_figure(node)


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


EXPLORER_MARK = 'class="ex3-explorer"'


def _load_plotly(app, pagename, templatename, context, doctree):
    if EXPLORER_MARK in context.get("body", ""):
        from ex3lib.pages import PLOTLY_JS

        app.add_js_file(PLOTLY_JS, loading_method="defer")


def _copy_plotly(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    from ex3lib.pages import PLOTLY_JS, plotly_js_path

    static = Path(app.builder.outdir) / "_static"
    static.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plotly_js_path(), static / PLOTLY_JS)


def _depend_on_ex3lib(app, docname, source):
    # An executed chapter shows what ex3lib computes, so an edit to ex3lib must
    # make Sphinx read (and so execute) the chapter again; otherwise an
    # incremental build would keep pages computed by the old code.
    if not str(app.env.doc2path(docname)).endswith(".ipynb"):
        return
    package = Path(app.srcdir) / "ex3lib"
    for path in sorted(package.rglob("*.py")):
        if not any(part.startswith(".") for part in path.relative_to(package).parts):
            app.env.note_dependency(str(path))


def _name_the_chapter(app, docname, source):
    # myst-nb executes a notebook right after this event, in a kernel that
    # inherits this process's environment: ex3lib.run_many starts its progress
    # lines on the build's terminal with the chapter's name.
    if str(app.env.doc2path(docname)).endswith(".ipynb"):
        os.environ["EX3_CHAPTER"] = Path(docname).name


def reading_order(site_map):
    """The documents of a ``sphinx_external_toc`` site map as a reader meets them: depth first from the root."""
    order = []

    def visit(docname):
        if docname not in order:
            order.append(docname)
            if docname in site_map:
                for child in site_map[docname].child_files():
                    visit(child)

    visit(site_map.root.docname)
    return order


def _read_in_reading_order(app, env, docnames):
    # Sphinx reads the added and changed documents in sorted order and lets this
    # event reorder them in place; documents the table of contents does not list
    # (there are none under only_build_toc_files) go last, alphabetically.
    site_map = getattr(env, "external_site_map", None)
    if site_map is None:
        return
    rank = {name: i for i, name in enumerate(reading_order(site_map))}
    docnames.sort(key=lambda name: (rank.get(name, len(rank)), name))


def setup(app):
    app.add_enumerable_node(
        TableFigure,
        "table",
        _table_title,
        html=(_visit_html, _depart_html),
        latex=(_visit_latex, _depart_latex),
        text=(_visit_other, _depart_other),
        man=(_visit_other, _depart_other),
        texinfo=(_visit_other, _depart_other),
    )
    app.connect("doctree-read", _retype_table_figures)
    app.connect("env-before-read-docs", _read_in_reading_order)
    app.connect("source-read", _depend_on_ex3lib)
    app.connect("source-read", _name_the_chapter)
    app.connect("html-page-context", _load_plotly)
    app.connect("html-page-context", _dedupe_scripts, priority=999)
    app.connect("build-finished", _copy_plotly)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
