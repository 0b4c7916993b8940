// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IGradientMarketplaceActions} from "./IGradientMarketplaceActions.sol";
import {IGradientMarketplaceErrors} from "./IGradientMarketplaceErrors.sol";
import {IGradientMarketplaceEvents} from "./IGradientMarketplaceEvents.sol";
import {IGradientMarketplaceViews} from "./IGradientMarketplaceViews.sol";

/// @title The gradient marketplace: bounties, a model DAG, committed validation, Merkle payouts
/// @notice Storage holds only what the contract itself must check; pointers to off-chain bytes
/// are recorded in events. Split by concern as Uniswap v3's pool interfaces: the types
/// (`IGradientMarketplaceTypes`), errors, events, actions and views each have their own file.
interface IGradientMarketplace is
    IGradientMarketplaceErrors,
    IGradientMarketplaceEvents,
    IGradientMarketplaceActions,
    IGradientMarketplaceViews
{}
