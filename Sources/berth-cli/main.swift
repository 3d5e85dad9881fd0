import BerthCLI

await BerthCommand.runAndExit()
