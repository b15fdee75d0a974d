"""The surfaces people touch: the notebooks' ipywidgets (a thin skin over the functions papermill runs), the
command line and the demo. Nothing below imports from here."""
