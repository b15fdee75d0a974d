"""One generation: Canny edges, the parameters object, the SD1.5 + ControlNet + IP-Adapter generator, memory
savers, stage caching, and the Workbench that chains retrieval, Canny and generation into a Result."""
