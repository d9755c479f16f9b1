"""The providers: one module per protocol behind one interface (``base.Provider``)."""
