"""Writes docs/notebooks/first_run.ipynb and executes it with nbclient (its outputs are committed).

    python tools/make_first_run_notebook.py docs/notebooks/first_run.ipynb /tmp/somewhere   # the run folder goes there
"""
import sys
import nbformat
from nbclient import NotebookClient

cells = [
    nbformat.v4.new_markdown_cell("# A first run\n\nBuild a small CNN with the Python API, train it *tiny* "
                                  "(2,000 / 500 / 500 synthetic images, one epoch) and look at its curves inline."),
    nbformat.v4.new_code_cell("import netspec as ns\n\n"
                              "net = ns.Network(input_shape=(3, 32, 32), layers=[\n"
                              "    ns.Conv2d(out_channels=16, kernel_size=3, padding=1), ns.BatchNorm(), ns.ReLU(),\n"
                              "    ns.MaxPool2d(kernel_size=2), ns.Flatten(), ns.Linear(out_features=10),\n"
                              "])\n"
                              "print(net.summary())"),
    nbformat.v4.new_code_cell("experiment = ns.Experiment(name=\"first_run\", network=net,\n"
                              "                           data=ns.DataConfig(source=\"synthetic\"),\n"
                              "                           train=ns.TrainConfig(lr=1e-3, batch_size=100, epochs=2))\n"
                              "result = ns.train(experiment, backend=\"torch\", tiny=True, out=\"runs_notebook\")"),
    nbformat.v4.new_code_cell("result.metrics[\"test_acc\"], result.folder, [round(r.val_acc, 4) for r in result.history]"),
    nbformat.v4.new_code_cell("result.figure(\"acc\")"),
    nbformat.v4.new_markdown_cell("A typo is one line, as on the command line, with pydantic's details kept:"),
    nbformat.v4.new_code_cell("try:\n    ns.train(experiment, overrides=[\"train.lrr=0.1\"])\n"
                              "except ns.SpecError as err:\n    print(err)\n    print(err.details[0][\"type\"])"),
]
nb = nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                      "language": "python"}})
path = sys.argv[1]
NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}}).execute()
nbformat.write(nb, path)
