"""The lineage's pictures: the view the pages and the PNG share, its tree layout, and the renderers.

Apart from the store on purpose: drawing needs matplotlib and templates, the store needs neither,
and an operator registers how it is drawn here (`view.register_operator_style`).
"""
