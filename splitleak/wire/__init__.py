"""The wire: generated stubs live in splitleak.v1; conversion and channel options live here."""
