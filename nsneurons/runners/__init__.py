"""The three experiments, side by side under the CLI: `neuronllm` (`nsneurons run`), `crosstask`
(`nsneurons crosstask`, after a run) and `naica` (`nsneurons run` of an `experiment: naica` recipe).
None imports another; what they share is nsneurons.runfolder (the output folder) and the library."""
