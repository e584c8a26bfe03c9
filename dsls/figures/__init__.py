"""Every figure dsls draws, apart from the code that decides which files a run writes (dsls.callbacks, dsls.tasks,
the search phase). Layer: beside tasks/ and callbacks/; it imports matplotlib, torchvision, numpy, torch and lower
dsls layers only (data, noise, samplers, runs), never callbacks/, tasks/, cli or pipeline.

    grids     image grids at native pixel size (make_grid / save_image), and labelled grids: an image grid with row
              and column labels drawn by matplotlib in pixel units (inverse problems, interpolation, reconstructions,
              guided samples by class)
    points    2-D panels: scatter over the data, σ-coloured trajectories, D's logit field
    search    what a search shows: panel titles (sampler, the settings it really used, guidance, metrics), the
              overview samples.png, the logit field, guided samples by class
    training  end-of-training figures: reconstruction pairs (phase 1), accuracy of D per σ (phase 2)
    tasks     the figures of evaluate.py's tasks: inverse-<task>.png and interpolate.png

Agg is selected here, once: the figures are files, and a run on a machine without a display must not fail."""
import matplotlib

matplotlib.use("Agg")
