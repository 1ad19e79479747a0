"""uqbench's built-in methods. Registered through the ``uqbench`` entry points like any third party's;
the core never imports this package by name."""
