// The in-process chain that `hardhat node` serves for StreamGate's Web3-gating tests.
// scripts/setup-chain.sh copies this file next to the cached node_modules: hardhat 2 only
// runs from a project where it is installed locally. Everything is pinned, so a hardhat
// upgrade cannot silently change the chain the tests see.
module.exports = {
  networks: {
    hardhat: {
      chainId: 31337,
      hardfork: "osaka",
      // Every transaction is mined at once into its own block; `fixture.mjs mine` adds blocks.
      mining: { auto: true, interval: 0 },
      // The well-known hardhat mnemonic: account #0 deploys, #1 owns the ERC-1271 wallet.
      accounts: {
        mnemonic: "test test test test test test test test test test test junk",
        path: "m/44'/60'/0'/0",
        count: 10,
        accountsBalance: "10000000000000000000000",
      },
    },
  },
};
