"""The monitor mode: a Textual app that shows the latest Snapshot in four views.

It reads snapshots and nothing else (never the engine, the capture or the
platform), from a `SnapshotSource` the command line builds. Only this
package imports Textual, so snapshot mode never pays for it.

    app.py              the app: layout, keys, filter, sort, snapshots in, terminal out
    source.py           the SnapshotSource protocol, and StaticSource for files and tests
    bars.py             tab bar (top), filter bar and status bar (bottom)
    table.py            RowTable: the Line-API table every view draws with
    process_view.py     1 Process view, with expandable sockets and connections
    connection_view.py  2 Connection view
    interface_view.py   3 Interface view: one card per interface
    dns_view.py         4 DNS view: resolver statistics and the query log
    help.py             the `?` overlay
    order.py            sort keys and the interface the app drives views by
    cells.py            units, sparklines, rate colours, fitting text to a cell
"""
