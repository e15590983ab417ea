"""Delivery channels: one module per channel over the contract in ``base``.

A channel never imports the pipeline or the rules engine: everything it needs
arrives in the :class:`channels.base.OutgoingMessage` it is handed.
"""
