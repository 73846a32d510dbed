"""rankgate plugins: the extension points of the feed pipeline, and the built-ins.

A plugin is a plain class whose method names are the hooks it takes part in
(``resolve_user``, ``find_items``, ``prefetch``, ``rerank``; see ``plugins.hooks``),
each taking one ``FeedContext`` (``plugins.context``). Options come from a nested
``Options(PluginOptions)`` model. Routes name plugins in routes.yaml:

    plugins: [{use: pin, field: sponsored}, {use: diversify, lambda: 0.7},
              {use: mypkg.rules:MyRule, some_option: 3}]

Everything is checked when routes.yaml loads (``plugins.registry``). Writing one:
``plugins/README.md``.
"""

from plugins.context import FeedContext, ItemArray, ItemsNotFound
from plugins.hooks import HOOKS, ItemsPlugin, PluginOptions, RulesPlugin, UserPlugin

__all__ = [
    "HOOKS",
    "FeedContext",
    "ItemArray",
    "ItemsNotFound",
    "ItemsPlugin",
    "PluginOptions",
    "RulesPlugin",
    "UserPlugin",
]
